"""qmailAccountPurge: qmail-ldap's qmailAccountPurge.sh, the cron job for deleted accounts.

An entry with accountStatus=deleted and a qmailAccountPurge time (seconds
since the epoch) is due once that time has come: from then on its
mailMessageStore "including all remaining content" may be deleted
(QLDAPINSTALL, LDAP_PURGE).

  qmailAccountPurge show    lists the due entries under control/ldapbasedn,
                            sorted by mail: the DN, then mail,
                            mailAlternateAddress, uid, mailMessageStore and
                            mailHost as attr=value lines (the script's
                            `ldapsearch -u -F =`), a blank line after each.
  qmailAccountPurge purge   removes the mailMessageStore directory of every
                            due entry whose mailbox lives here (no mailHost,
                            or mailHost is control/me or one of
                            ldapclusterhosts) and prints what it removed.
                            The LDAP entry itself is left alone: qmailUser is
                            an auxiliary class and the entry belongs to the
                            directory's administrators.

The path is found as qmail-lspawn finds it (homeDirectory + a relative
mailMessageStore, or ldapmessagestore + a relative one, same path checks). An
entry without mailMessageStore, with an illegal path, or whose path is "/" or
the ldapmessagestore directory itself is reported and skipped; a symlink is
never followed. Exit codes: 0 done, 100 usage, 111 when the directory could not
be read or something due could not be removed (the next run tries again).

Differences from the script: the script's `purge` was left empty and its
filter `qmailAccountPurge=<now` cannot match (the attribute has no ordering
rule), so the due time is compared here, after searching for
(&(accountStatus=deleted)(qmailAccountPurge=*)) inside control/ldapobjectclass.
"""

import os
import shutil
import sys
import time

from engine import control, qldap

PROG = "qmailAccountPurge"
USAGE = f"{PROG}: usage: {PROG} show|purge"
SHOWN = ("mail", "mailAlternateAddress", "uid", "mailMessageStore", "mailHost")
ATTRS = [*SHOWN, "homeDirectory", "accountStatus", "qmailAccountPurge"]
EXIT_USAGE, EXIT_TEMP = 100, 111


class Skip(Exception):
    """A due entry whose mailbox cannot or must not be removed; the text says why."""


def due_filter(objectclass):
    return qldap.wrap_objectclass(f"(&(accountStatus={qldap.escape('deleted')})(qmailAccountPurge=*))",
                                  objectclass)


def purge_time(entry):
    """qmailAccountPurge as seconds since the epoch, None when it is not a number."""
    value = (entry.single("qmailAccountPurge") or "").replace(" ", "")  # NumericString may hold spaces
    return int(value) if value.isascii() and value.isdigit() else None


def due_entries(directory, now):
    """The entries whose purge time has come, sorted by mail (case-insensitive) as `ldapsearch -S mail`."""
    found = directory.search(due_filter(directory.cfg.objectclass), ATTRS)
    due = []
    for entry in found:
        when = purge_time(entry)
        if entry.status() == "deleted" and when is not None and when <= now:
            due.append(entry)
    return sorted(due, key=lambda e: ((e.values("mail") or [""])[0].casefold(), e.dn))


def show(entries, out):
    for entry in entries:
        out.write(entry.dn + "\n")
        for name in SHOWN:
            for value in entry.values(name) or ():
                out.write(f"{name}={value}\n")
        out.write("\n")


def store_path(entry, cfg):
    """The absolute, normalized mailMessageStore directory of `entry` on this host; Skip otherwise."""
    host = entry.single("mailHost")
    if host and not cfg.is_me(host):
        raise Skip(f"mailbox is on {host}")
    if not entry.single("mailMessageStore"):
        raise Skip("no mailMessageStore")
    home, aliasempty = entry.mailstore(cfg)
    path = os.path.normpath(os.path.join(home, aliasempty or ""))
    if not os.path.isabs(path) or path == "/" or (cfg.messagestore and
                                                    path == os.path.normpath(cfg.messagestore)):
        raise Skip(f"refusing to remove {path}")
    return path


def remove_store(path):
    """Remove the directory tree; False when there was nothing to remove."""
    if not os.path.lexists(path):
        return False
    if os.path.islink(path) or not os.path.isdir(path):
        raise Skip(f"{path} is not a directory")
    shutil.rmtree(path)  # fd-based on Linux: a symlink inside is removed, never followed
    return True


def purge(entries, cfg, out, err):
    """Remove the due mailboxes; the number of entries that failed."""
    failed = 0
    for entry in entries:
        try:
            path = store_path(entry, cfg)
            if remove_store(path):
                out.write(f"{entry.dn}: removed {path}\n")
        except Skip as e:
            err.write(f"{PROG}: warning: {entry.dn}: {e}\n")
        except qldap.QldapError as e:
            err.write(f"{PROG}: warning: {entry.dn}: {e}\n")
            failed += 1
        except OSError as e:
            err.write(f"{PROG}: warning: {entry.dn}: unable to remove {e.filename or ''}: {e.strerror}\n")
            failed += 1
    return failed


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in ("show", "purge"):
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = qldap.Config.load(login_fallback=True)
        with qldap.Directory(cfg) as directory:
            entries = due_entries(directory, int(time.time()))
    except (control.ControlError, qldap.QldapError) as e:
        print(f"{PROG}: fatal: {e}", file=sys.stderr)
        return EXIT_TEMP
    if argv[0] == "show":
        show(entries, sys.stdout)
        return 0
    failed = purge(entries, cfg, sys.stdout, sys.stderr)
    return EXIT_TEMP if failed else 0


if __name__ == "__main__":
    sys.exit(main())
