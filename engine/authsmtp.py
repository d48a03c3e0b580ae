"""auth_smtp: SMTP AUTH against the directory (auth_smtp.c, checkpassword.c; spec 3.8, 5.3.5).

The login is looked up as `(uid=<login>)` (with ldapobjectclass), LDAP
only. Results, as auth_smtp's K / D / exit 111: ("K", login) for a good
password; ("D", "") for an unknown login, a wrong or empty password;
("Z", "") for accountStatus noaccess/disabled/deleted and for any
directory trouble (qmail-smtpd answers 454, not 535, for those).
Passwords are compared with engine.passwd, or with a re-bind as the
entry's DN when control/ldaprebind is 1.
"""

from engine import control, passwd, qldap
from engine.dirthread import DirectoryThread

AUTH_ATTRS = ["uid", "accountStatus", "userPassword"]
_threads = {}


def _thread(home):
    if home not in _threads:
        _threads[home] = DirectoryThread(home, login_fallback=True)
    return _threads[home]


def _check(directory, login, password):
    entry = directory.lookup_uid(login, AUTH_ATTRS)
    if entry is None:
        return "D", ""
    if entry.status() in ("noaccess", "disabled", "deleted"):
        return "Z", ""
    if directory.cfg.rebind:
        ok = directory.check_bind(entry.dn, password)
    else:
        ok = any(passwd.check(password, stored) for stored in entry.values("userPassword"))
    return ("K", login) if ok else ("D", "")


async def check(home, login, password):
    if not password:
        return "D", ""
    try:
        return await _thread(home).call(lambda d: _check(d, login, password))
    except (qldap.QldapError, control.ControlError):
        return "Z", ""
