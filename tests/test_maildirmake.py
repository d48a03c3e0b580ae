"""maildirmake: creates name/{tmp,new,cur} 0700; an existing name is a fatal error (111); no name is usage (100)."""

import stat
import subprocess
import sys

from engine import maildirmake


def run(*args):
    return subprocess.run([sys.executable, "-m", "engine.maildirmake", *args], capture_output=True, text=True)


def test_makes_a_maildir(tmp_path):
    p = run(str(tmp_path / "Maildir"))
    assert p.returncode == 0 and p.stderr == ""
    for sub in ("", "tmp", "new", "cur"):
        assert stat.S_IMODE((tmp_path / "Maildir" / sub).stat().st_mode) == 0o700


def test_existing_name_is_fatal(tmp_path):
    (tmp_path / "Maildir").mkdir()
    p = run(str(tmp_path / "Maildir"))
    assert p.returncode == 111
    assert p.stderr == f"maildirmake: fatal: unable to mkdir {tmp_path / 'Maildir'}: File exists\n"


def test_usage():
    assert maildirmake.main([]) == 100
