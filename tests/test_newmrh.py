"""qmail-newmrh: control/morercpthosts -> control/morercpthosts.cdb."""

import os
import shutil
import stat
import subprocess
import sys

from engine import cdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINYCDB = shutil.which("cdb")


def newmrh(home):
    return subprocess.run([sys.executable, "-m", "engine.newmrh"], capture_output=True,
                          env=dict(os.environ, QMAILHOME=home, PYTHONPATH=ROOT))


def write_mrh(home, data):
    with open(os.path.join(home, "control", "morercpthosts"), "wb") as f:
        f.write(data)


def test_builds_lowercased_key_only_cdb(qmailhome):
    write_mrh(qmailhome, b"Example.COM\n# comment\n\n.Sub.Example.ORG \t\nlast.example")
    r = newmrh(qmailhome)
    assert r.returncode == 0, r.stderr
    out = os.path.join(qmailhome, "control", "morercpthosts.cdb")
    assert subprocess.run([TINYCDB, "-d", out], capture_output=True, check=True).stdout == (
        b"+11,0:example.com->\n+16,0:.sub.example.org->\n+12,0:last.example->\n\n")
    assert cdb.contains(out, b".sub.example.org")
    assert subprocess.run([TINYCDB, "-q", out, "example.com"]).returncode == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    assert not os.path.exists(os.path.join(qmailhome, "control", "morercpthosts.tmp"))


def test_rebuild_replaces_the_old_cdb(qmailhome):
    write_mrh(qmailhome, b"old.example\n")
    assert newmrh(qmailhome).returncode == 0
    write_mrh(qmailhome, b"new.example\n")
    assert newmrh(qmailhome).returncode == 0
    out = os.path.join(qmailhome, "control", "morercpthosts.cdb")
    assert cdb.contains(out, "new.example") and not cdb.contains(out, "old.example")


def test_missing_morercpthosts_exits_111(qmailhome):
    r = newmrh(qmailhome)
    assert r.returncode == 111
    assert r.stderr.startswith(b"qmail-newmrh: fatal: unable to read control/morercpthosts: ")
    assert not os.path.exists(os.path.join(qmailhome, "control", "morercpthosts.cdb"))


def test_missing_home_exits_111(tmp_path):
    r = newmrh(str(tmp_path / "nowhere"))
    assert r.returncode == 111
    assert r.stderr.startswith(b"qmail-newmrh: fatal: unable to chdir to ")
