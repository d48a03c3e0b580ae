"""qmail-showctl, run as a program against a qmail home."""

import os
import subprocess
import sys
import time

from engine import conf, control

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")


def showctl(home):
    python = PYTHON if os.path.exists(PYTHON) else sys.executable
    r = subprocess.run([python, "-m", "engine.showctl"], capture_output=True, cwd=ROOT,
                       env=dict(os.environ, QMAILHOME=home))
    return r.returncode, r.stdout.decode("ascii").split("\n"), r.stderr


def write(home, name, data):
    with open(os.path.join(home, "control", name), "wb") as f:
        f.write(data)


def test_header(qmailhome):
    code, lines, _ = showctl(qmailhome)
    assert code == 0
    assert lines[:5] == [f"qmail home directory: {qmailhome}.", "user-ext delimiter: -.",
                         "paternalism (in decimal): 2.", f"silent concurrency limit: {conf.SPAWN}.",
                         f"subdirectory split: {conf.SPLIT}."]
    uid, gid = os.stat(qmailhome).st_uid, os.stat(qmailhome).st_gid   # a single-user instance
    assert lines[5] == "user ids: " + ", ".join([str(uid)] * 8) + "."
    assert lines[6] == f"group ids: {gid}, {gid}."
    assert lines[7:10] == ["me: My name is testhost.example.org", "ldapserver: My ldap server is ", ""]


def test_defaults(qmailhome):
    code, lines, _ = showctl(qmailhome)
    for expected in [
            "bouncefrom: (Default.) Bounce user name is MAILER-DAEMON.",
            "bouncehost: (Default.) Bounce host name is testhost.example.org.",
            "concurrencylocal: (Default.) Local concurrency is 10.",
            "databytes: (Default.) SMTP DATA limit is 0 bytes.",
            "locals: (Default.) Messages for me are delivered locally.",
            "queuelifetime: (Default.) Message lifetime in the queue is 604800 seconds.",
            "timeoutremote: (Default.) SMTP client data timeout is 120 seconds.",
            "timeoutsmtpd: (Default.) SMTP server data timeout is 120 seconds.",
            "virtualdomains: (Default.) No virtual domains.",
            "morercpthosts.cdb: (Default.) No effect.",
            "ldapserver: (Default.) undefined! Uh-oh",
            "ldaptimeout: (Default.) LDAP server timeout is 30 seconds.",
            "ldapdefaultdotmode: (Default.) Default dot mode for ldap users is ldaponly.",
            "ldaplocaldelivery: (Default.) Local passwd lookup is 1 (1 = on, 0 = off).",
            "users/cdb: (Default.) No effect."]:
        assert expected in lines


def test_every_registered_file_has_a_paragraph(qmailhome):
    _, lines, _ = showctl(qmailhome)
    for name in control.REGISTRY:
        assert any(line.startswith(f"{name}: ") for line in lines), name
    assert "Now the qmail-ldap specific files:" in lines


def test_values_that_are_set(qmailhome):
    write(qmailhome, "concurrencyremote", b"30\n")
    write(qmailhome, "rcpthosts", b"example.com\n# c\n.example.org\n")
    write(qmailhome, "bouncehost", b"bounces.example\n")
    write(qmailhome, "smtpgreeting", b"hi \x01there\n")
    write(qmailhome, "ldapserver", b"ldap1.example\nldap2.example:3389\n")
    _, lines, _ = showctl(qmailhome)
    assert "concurrencyremote: Remote concurrency is 30." in lines
    assert "bouncehost: Bounce host name is bounces.example." in lines
    assert "smtpgreeting: SMTP greeting: 220 testhost.example.org ESMTP hi ?there." in lines
    i = lines.index("rcpthosts: ")
    assert lines[i + 1:i + 3] == ["SMTP clients may send messages to recipients at example.com.",
                                  "SMTP clients may send messages to recipients at .example.org."]
    assert "ldapserver: My ldap server is ldap1.example ldap2.example:3389" in lines
    i = lines.index("ldapserver: ")
    assert lines[i + 1:i + 3] == ["ldap1.example", "ldap2.example:3389"]


def test_unparsable_number(qmailhome):
    write(qmailhome, "queuelifetime", b"a week\n")
    code, lines, _ = showctl(qmailhome)
    assert code == 0
    line = next(x for x in lines if x.startswith("queuelifetime: "))
    assert line == "queuelifetime: (Default.) Message lifetime in the queue is 604800 seconds."


def test_cdb_freshness(qmailhome):
    write(qmailhome, "morercpthosts", b"a.example\n")
    _, lines, _ = showctl(qmailhome)
    assert "morercpthosts.cdb: Oops! morercpthosts exists but morercpthosts.cdb doesn't." in lines
    write(qmailhome, "morercpthosts.cdb", b"")
    past = time.time() - 100
    os.utime(os.path.join(qmailhome, "control", "morercpthosts.cdb"), (past, past))
    _, lines, _ = showctl(qmailhome)
    assert "morercpthosts.cdb: Oops! morercpthosts.cdb is older than morercpthosts." in lines
    os.utime(os.path.join(qmailhome, "control", "morercpthosts.cdb"))
    _, lines, _ = showctl(qmailhome)
    assert "morercpthosts.cdb: Modified recently enough; hopefully up to date." in lines


def test_unknown_and_obsolete_files(qmailhome):
    write(qmailhome, "tarpitcount", b"5\n")
    write(qmailhome, "mystery", b"?\n")
    _, lines, _ = showctl(qmailhome)
    assert lines[-3:] == ["mystery: I have no idea what this file does.",
                          "tarpitcount: No longer used, please remove.", ""]
    assert not any(line.startswith("rcpthosts: I have no idea") for line in lines)


def test_missing_home_exits_111(tmp_path):
    code, lines, _ = showctl(str(tmp_path / "nowhere"))
    assert code == 111
    assert any(line.startswith("Oops! Unable to open") for line in lines)
