"""Build-time and installation constants: qmail's conf-* files and auto_* values.

conf-spawn and conf-split are read by setup.py and baked into
engine/_buildconf.py; QMAILHOME (environment) overrides the qmail home
(conf-qmail, default /var/qmail). The user and group names are qmail's
conf-users / conf-groups.
"""

import os

try:
    from engine._buildconf import SPAWN, SPLIT
except ImportError:  # running from a tree that setup.py has not built yet
    SPAWN, SPLIT = 500, 23

DEFAULT_QMAILHOME = "/var/qmail"

# conf-users, in qmail's order
USER_ALIAS = "alias"
USER_DAEMON = "qmaild"
USER_LOG = "qmaill"
USER_OWNER = "root"
USER_PASSWD = "qmailp"
USER_QUEUE = "qmailq"
USER_REMOTE = "qmailr"
USER_SEND = "qmails"
USERS = (USER_ALIAS, USER_DAEMON, USER_LOG, USER_PASSWD, USER_QUEUE, USER_REMOTE, USER_SEND)

# conf-groups
GROUP_QMAIL = "qmail"
GROUP_NOFILES = "nofiles"
GROUPS = (GROUP_QMAIL, GROUP_NOFILES)

# which group each daemon user belongs to (qmail's INSTALL.ids)
USER_GROUP = {
    USER_ALIAS: GROUP_NOFILES, USER_DAEMON: GROUP_NOFILES, USER_LOG: GROUP_NOFILES,
    USER_PASSWD: GROUP_NOFILES, USER_QUEUE: GROUP_QMAIL, USER_REMOTE: GROUP_QMAIL,
    USER_SEND: GROUP_QMAIL,
}

BREAK = "-"      # conf-break: the extension separator
PATTERN = 0o002  # conf-patrn: permission bits a .qmail file must not have


def qmailhome():
    """The qmail home of this process: $QMAILHOME, else /var/qmail."""
    return os.environ.get("QMAILHOME") or DEFAULT_QMAILHOME
