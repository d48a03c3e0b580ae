"""qmail-local: environment, .qmail search order, dot modes and the instruction list."""

import os

import pytest

from engine import local
from engine.local import Recipient


def rcpt(home, ext="", dash="", sender="alice@example.org", local_="joe", aliasempty="./Maildir/"):
    return Recipient(user="joe", home=str(home), local=local_, dash=dash, ext=ext,
                     host="mx.dept.example.org", sender=sender, aliasempty=aliasempty)


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def test_command_env(tmp_path):
    r = rcpt(tmp_path, ext="foo-bar-baz", dash="-", local_="joe-foo-bar-baz", sender="a b@x.org")
    env = local.command_env(r, base={})
    assert env["RECIPIENT"] == "joe-foo-bar-baz@mx.dept.example.org"
    assert env["DTLINE"] == "Delivered-To: joe-foo-bar-baz@mx.dept.example.org\n"
    assert env["RPLINE"] == 'Return-Path: <"a b"@x.org>\n'
    assert env["UFLINE"].startswith("From a-b@x.org ")
    assert (env["EXT"], env["EXT2"], env["EXT3"], env["EXT4"]) == ("foo-bar-baz", "bar-baz", "baz", "")
    assert (env["HOST2"], env["HOST3"], env["HOST4"]) == ("mx.dept.example", "mx.dept", "mx")
    assert local.ufline(rcpt(tmp_path, sender="")).startswith("From MAILER-DAEMON ")


def test_host_parts_without_dots():
    assert local._host_parts("localhost") == ["localhost"] * 3


@pytest.mark.parametrize("present,expect,default", [
    ([".qmail-a-b-c", ".qmail-a-default", ".qmail-default"], ".qmail-a-b-c", None),
    ([".qmail-a-b-default", ".qmail-a-default"], ".qmail-a-b-default", "C"),
    ([".qmail-a-default", ".qmail-default"], ".qmail-a-default", "b-C"),
    ([".qmail-default"], ".qmail-default", "A-b-C"),
])
def test_qmail_search_order(tmp_path, monkeypatch, present, expect, default):
    monkeypatch.chdir(tmp_path)
    for name in present:
        write(name, name + "\n")
    text, forward_only, found_default = local.qmail_search("-", "A-b-C")
    assert text == expect + "\n"
    assert found_default == default and not forward_only


def test_qmail_search_dots_become_colons_and_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(".qmail-x:y", "&a@b\n", 0o700)
    assert local.qmail_search("-", "x.y") == ("&a@b\n", True, None)
    assert local.qmail_search("-", "other") is None


def test_writable_qmail_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(".qmail", "./Maildir/\n", 0o602)
    with pytest.raises(local.LocalFailure) as e:
        local.qmail_search("", "")
    assert (e.value.code, e.value.text) == (111, "Uh-oh: .qmail file is writable. (#4.7.0)")


def test_home_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.chmod(tmp_path, 0o1755)
    with pytest.raises(local.LocalFailure, match="Home directory is sticky"):
        local.check_home()
    os.chmod(tmp_path, 0o757)
    with pytest.raises(local.LocalFailure, match=r"Uh-oh: home directory is writable. \(#4.7.0\)"):
        local.check_home()
    os.chmod(tmp_path, 0o755)
    local.check_home()


def test_dot_modes():
    assert local.dot_mode({}) == (local.DOT_STOCK, False)
    assert local.dot_mode({"QMAILDOTMODE": "LDAPonly"}) == (local.DOT_LDAP, False)
    assert local.dot_mode({"QMAILDOTMODE": "ldapwithprog"}) == (local.DOT_LDAP, True)
    assert local.dot_mode({"QMAILDOTMODE": "both"}) == (local.DOT_BOTH, True)
    with pytest.raises(local.LocalFailure) as e:
        local.dot_mode({"QMAILDOTMODE": "none"})
    assert (e.value.code, e.value.text) == (100, "Error: Non valid dot-mode found: none. (#5.3.5)")


def test_split_escaped():
    assert local.split_escaped(r"a@b:c\:d@e") == ["a@b", "c:d@e"]


def test_ldap_then_dot_lines_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(".qmail", "|dotprog\n")
    env = {"QMAILDOTMODE": "both", "QMAILDELIVERYPROGRAM": "/bin/prog1:/bin/prog2",
           "QMAILFORWARDS": "f1@x:f2@y"}
    ins = local.instructions(rcpt(tmp_path), env)
    assert ins.lines == ["|/bin/prog1", "|/bin/prog2", "&f1@x", "&f2@y", "./Maildir/", "#", "|dotprog"]


def test_ldaponly_ignores_programs_and_dotfiles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(".qmail", "|dotprog\n")
    env = {"QMAILDOTMODE": "ldaponly", "QMAILDELIVERYPROGRAM": "/bin/prog1", "QMAILMODE": "noforward",
           "QMAILFORWARDS": "f1@x"}
    assert local.instructions(rcpt(tmp_path), env).lines == ["./Maildir/", "#"]


def test_ldap_modes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    warnings = []
    env = {"QMAILDOTMODE": "ldaponly", "QMAILMODE": "forwardonly:reply:bogus", "QMAILFORWARDS": "f@x"}
    ins = local.instructions(rcpt(tmp_path), env, warnings.append)
    assert ins.lines == ["&f@x", "#"] and ins.forward_only_ldap and ins.no_program
    assert warnings == ["Warning: Reply mode is on but there is no reply text.",
                        "Warning: undefined mail delivery mode: bogus (ignored)."]
    env["QMAILREPLYTEXT"] = "away"
    assert local.instructions(rcpt(tmp_path), env).replies == ["qmail-reply ./Maildir/"]
    assert local.instructions(rcpt(tmp_path, sender=""), env).replies == []


def test_stock_extension_without_file_bounces(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(local.LocalFailure) as e:
        local.instructions(rcpt(tmp_path, dash="-", ext="nope"), {})
    assert (e.value.code, e.value.text) == (100, "Sorry, no mailbox here by that name. (#5.1.1)")
    assert local.instructions(rcpt(tmp_path), {}).lines == ["./Maildir/"]


def test_owner_sender(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(".qmail-list", "&a@b\n")
    r = rcpt(tmp_path, dash="-", ext="list", local_="joe-list")
    assert local.owner_sender(r) == "alice@example.org"
    write(".qmail-list-owner", "&owner@b\n")
    assert local.owner_sender(r) == "joe-list-owner@mx.dept.example.org"
    write(".qmail-list-owner-default", "&owner@b\n")
    assert local.owner_sender(r) == "joe-list-owner-@mx.dept.example.org-@[]"
    assert local.owner_sender(rcpt(tmp_path, dash="-", ext="list", sender="")) == ""


def test_loop_detection():
    dt = "Delivered-To: joe@x\n"
    local.check_loop(["Subject: hi\n", "Delivered-To: other@x\n"], dt)
    with pytest.raises(local.LocalFailure) as e:
        local.check_loop(["Subject: hi\n", dt], dt)
    assert e.value.code == 100


def run_local_program(args, message, cwd):
    import subprocess
    import sys
    msg = os.path.join(cwd, "message")
    with open(msg, "wb") as f:
        f.write(message)
    with open(msg, "rb") as f:
        return subprocess.run([sys.executable, "-m", "engine.local", *args], stdin=f, capture_output=True,
                              text=True, env={**os.environ, "PATH": os.environ["PATH"]})


def test_program_interface_delivers_and_reports(tmp_path):
    home = tmp_path / "joe"
    home.mkdir(mode=0o755)
    for sub in ("tmp", "new", "cur"):
        (home / "Maildir" / sub).mkdir(parents=True)
    write(home / ".qmail-list", "./Maildir/\n|echo program ran; exit 0\n")
    p = run_local_program(["--", "joe", str(home), "joe-list", "-", "list", "example.test", "a@b.test", "./Maildir/"],
                          b"Subject: x\n\nhi\n", str(tmp_path))
    assert (p.returncode, p.stdout) == (0, "program ran\ndid 1+0+1\n")
    [name] = os.listdir(home / "Maildir" / "new")
    with open(home / "Maildir" / "new" / name, "rb") as f:
        assert f.read() == b"Return-Path: <a@b.test>\nDelivered-To: joe-list@example.test\nSubject: x\n\nhi\n"


def test_program_interface_n_mode_and_usage(tmp_path):
    home = tmp_path / "joe"
    home.mkdir(mode=0o755)
    write(home / ".qmail", "&fwd@elsewhere.test\n|prog\n./Mailbox\n")
    p = run_local_program(["-n", "--", "joe", str(home), "joe", "", "", "example.test", "a@b.test", "./Maildir/"],
                          b"x\n", str(tmp_path))
    assert p.returncode == 0
    assert p.stdout == "unlimited quota\nforward fwd@elsewhere.test\nprogram prog\nmbox ./Mailbox\ndid 1+1+1\n"
    p = run_local_program(["joe", "relative/home"], b"x\n", str(tmp_path))
    assert p.returncode == 100 and "usage: qmail-local" in p.stderr


def test_program_exit_codes(tmp_path):
    home = tmp_path / "joe"
    home.mkdir(mode=0o755)
    for ext, code, want in (("hard", 100, 100), ("soft", 75, 111), ("perm", 64, 100), ("stop", 99, 0)):
        write(home / f".qmail-{ext}", f"|echo said {code}; exit {code}\n|echo not reached\n")
        p = run_local_program(["--", "joe", str(home), f"joe-{ext}", "-", ext, "example.test", "a@b.test",
                               "./Maildir/"], b"x\n", str(tmp_path))
        assert p.returncode == want, (ext, p.stdout)
        assert p.stdout.startswith(f"said {code}\n") and "not reached" not in p.stdout
