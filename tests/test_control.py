"""engine.control: the reader rules of qmail's control.c, constmap, and the registry of control files."""

import os

import pytest

from engine import control
from engine.control import INT_MAX, ULONG_MAX, ConstMap, ControlError


def write(home, name, data):
    p = os.path.join(home, "control", name)
    with open(p, "wb") as f:
        f.write(data)
    return p


# --- line -----------------------------------------------------------------------------------

def test_line_is_first_line_with_trailing_space_tab_newline_stripped(qmailhome):
    write(qmailhome, "bouncefrom", b"  daemon \t \nsecond line\n")
    assert control.read_line("bouncefrom", "x", qmailhome) == "  daemon"


def test_line_keeps_a_carriage_return_like_qmail(qmailhome):
    write(qmailhome, "bouncefrom", b"daemon\r\n")
    assert control.read_line("bouncefrom", "x", qmailhome) == "daemon\r"


def test_line_without_final_newline(qmailhome):
    write(qmailhome, "bouncefrom", b"daemon")
    assert control.read_line("bouncefrom", "x", qmailhome) == "daemon"


def test_empty_line_file_is_empty_not_default(qmailhome):
    write(qmailhome, "smtpgreeting", b"")
    assert control.read_line("smtpgreeting", "default", qmailhome) == ""


def test_missing_file_gives_default(qmailhome):
    assert control.read_line("bouncefrom", "MAILER-DAEMON", qmailhome) == "MAILER-DAEMON"
    assert control.read_list("rcpthosts", ["d"], qmailhome) == ["d"]
    assert control.read_int("queuelifetime", 604800, qmailhome) == 604800
    assert control.read_raw("custombouncetext", b"none", qmailhome) == b"none"


def test_line_keeps_8bit_bytes(qmailhome):
    write(qmailhome, "smtpgreeting", b"caf\xe9 \xff\n")
    value = control.read_line("smtpgreeting", None, qmailhome)
    assert value.encode("utf-8", "surrogateescape") == b"caf\xe9 \xff"


def test_unreadable_file_is_a_control_error_naming_it(qmailhome):
    os.mkdir(os.path.join(qmailhome, "control", "bouncefrom"))
    with pytest.raises(ControlError, match="control/bouncefrom"):
        control.read_line("bouncefrom", "x", qmailhome)


# --- list -----------------------------------------------------------------------------------

def test_list_drops_empty_comment_and_blank_lines(qmailhome):
    write(qmailhome, "rcpthosts", b"# comment\nexample.com \t\n\n   \t\n.example.org\n  #indented stays\nlast")
    assert control.read_list("rcpthosts", None, qmailhome) == [
        "example.com", ".example.org", "  #indented stays", "last"]


def test_list_keeps_carriage_returns_and_order(qmailhome):
    write(qmailhome, "locals", b"b.example\r\na.example\n")
    assert control.read_list("locals", None, qmailhome) == ["b.example\r", "a.example"]


def test_empty_list_file_is_empty_list(qmailhome):
    write(qmailhome, "rcpthosts", b"")
    assert control.read_list("rcpthosts", None, qmailhome) == []


# --- int and ulong --------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    (b"30\n", 30), (b"30x\n", 30), (b"007", 7), (b"45 seconds\n", 45), (b"0\n", 0),
    (b"%d\n" % INT_MAX, INT_MAX)])
def test_int_is_the_leading_digits(qmailhome, text, value):
    write(qmailhome, "concurrencyremote", text)
    assert control.read_int("concurrencyremote", 20, qmailhome) == value


@pytest.mark.parametrize("text", [b"abc\n", b" 5\n", b"-5\n", b"\n", b""])
def test_int_without_leading_digit_leaves_the_default_and_warns_once(qmailhome, text, capsys):
    write(qmailhome, "concurrencyremote", text)
    assert control.read_int("concurrencyremote", 20, qmailhome) == 20
    assert control.read_int("concurrencyremote", 20, qmailhome) == 20
    err = capsys.readouterr().err
    assert err.count("control/concurrencyremote: line 1: not a number") == 1


def test_int_above_int_max_is_an_error(qmailhome):
    write(qmailhome, "queuelifetime", b"%d\n" % (INT_MAX + 1))
    with pytest.raises(ControlError, match=r"control/queuelifetime: line 1: number too large: 2147483648"):
        control.read_int("queuelifetime", 604800, qmailhome)


def test_ulong_has_no_int_max_bound_but_ulong_max(qmailhome):
    write(qmailhome, "databytes", b"%d\n" % (INT_MAX * 4))
    assert control.read_ulong("databytes", 0, qmailhome) == INT_MAX * 4
    write(qmailhome, "databytes", b"%d\n" % ULONG_MAX)
    assert control.read_ulong("databytes", 0, qmailhome) == ULONG_MAX
    write(qmailhome, "databytes", b"%d\n" % (ULONG_MAX + 1))
    with pytest.raises(ControlError, match="control/databytes: line 1: number too large"):
        control.read_ulong("databytes", 0, qmailhome)


def test_raw_is_verbatim(qmailhome):
    data = b"\n# not a comment\n  spaced  \r\n\n"
    write(qmailhome, "custombouncetext", data)
    assert control.read_raw("custombouncetext", None, qmailhome) == data


def test_me(qmailhome):
    assert control.me(qmailhome) == "testhost.example.org"
    os.unlink(os.path.join(qmailhome, "control", "me"))
    assert control.me(qmailhome) is None


# --- constmap -------------------------------------------------------------------------------

def test_constmap_is_ascii_case_insensitive():
    m = ConstMap(["Example.COM", "CAFÉ.example"])
    assert "example.com" in m and "EXAMPLE.com" in m
    assert "café.example" not in m        # constmap folds A-Z only
    assert "CAFÉ.example".lower() not in m
    assert "caFÉ.EXAMPLE" in m
    assert "example.co" not in m and "" not in m


def test_constmap_values_split_at_first_colon_and_skip_lines_without_colon():
    m = ConstMap(["Virt.example:joe", "no colon here", "a.example:b:c", ":empty-key"], values=True)
    assert m.get("virt.EXAMPLE") == "joe"
    assert m.get("a.example") == "b:c"
    assert "no colon here" not in m
    assert m.get("") == "empty-key"
    assert len(m) == 3


def test_constmap_duplicate_last_one_wins():
    m = ConstMap(["dom.example:first", "DOM.example:second"], values=True)
    assert m.get("dom.example") == "second"


# --- the registry ---------------------------------------------------------------------------

SPEC_STOCK = """me badmailfrom bouncefrom bouncehost concurrencylocal concurrencyremote databytes defaultdomain
defaulthost idhost plusdomain doublebouncehost doublebounceto envnoathost helohost localiphost locals
morercpthosts.cdb percenthack qmqpservers queuelifetime rcpthosts smtpgreeting smtproutes timeoutconnect
timeoutremote timeoutsmtpd virtualdomains users/assign users/cdb users/include users/exclude users/mailnames""".split()
SPEC_LDAP = """ldapserver ldapbasedn ldapobjectclass ldaplogin ldappassword ldapgrouplogin ldapgrouppassword
ldaptimeout ldaprebind ldapuid ldapgid ldapmessagestore ldapdefaultdotmode defaultquotasize defaultquotacount
ldaplocaldelivery ldapcluster ldapclusterhosts aliasdomains locals.cdb rcpthosts.cdb dirmaker quotawarning
custombouncetext bouncemaxbytes relaymailfrom rbllist goodmailaddr goodmailfrom badrcptto badmailfrom-unknown
smtpclustercookie outgoingip qmqpcip bigbrother signatures smtpcert remotecert tlsciphers tlsremoteciphers
tlsdheparams pbsservers pbsport pbssecret pbsip pbscachesize pbstimeout pbsenv aliasempty defaultdelivery
Makefile""".split()


@pytest.mark.parametrize("name", SPEC_STOCK + SPEC_LDAP)
def test_every_spec_control_file_is_registered(name):
    entry = control.REGISTRY[name]
    assert entry.type in control.TYPES
    assert entry.readers and entry.meaning


def test_obsolete_files_are_not_registered():
    assert not set(control.OBSOLETE) & set(control.REGISTRY)


@pytest.mark.parametrize("name, kind, value", [
    ("bouncefrom", "line", "MAILER-DAEMON"), ("concurrencylocal", "int", 10), ("concurrencyremote", "int", 20),
    ("queuelifetime", "int", 604800), ("timeoutconnect", "int", 60), ("timeoutremote", "int", 120),
    ("timeoutsmtpd", "int", 120), ("databytes", "ulong", 0), ("doublebounceto", "line", "postmaster"),
    ("smtpgreeting", "line", ""), ("ldaptimeout", "int", 30), ("ldaplocaldelivery", "int", 1),
    ("ldapdefaultdotmode", "line", "ldaponly"), ("pbsport", "int", 2821), ("pbscachesize", "ulong", 1048576),
    ("pbstimeout", "int", 600), ("tlsciphers", "line", "compat"), ("tlsdheparams", "line", "none"),
    ("outgoingip", "line", "0.0.0.0"), ("rcpthosts", "list", []), ("ldapserver", "list", None),
    ("locals.cdb", "cdb", None), ("users/cdb", "cdb", None), ("bouncemaxbytes", "int", 0)])
def test_registry_defaults_follow_the_spec(qmailhome, name, kind, value):
    assert control.REGISTRY[name].type == kind
    assert control.value(name, qmailhome) == value


@pytest.mark.parametrize("name, literal", [
    ("bouncehost", "bouncehost"), ("doublebouncehost", "doublebouncehost"), ("envnoathost", "envnoathost"),
    ("defaultdomain", "defaultdomain"), ("defaulthost", "defaulthost"), ("idhost", "idhost"),
    ("plusdomain", "plusdomain"), ("helohost", None), ("localiphost", None)])
def test_me_derived_defaults(qmailhome, name, literal):
    assert control.value(name, qmailhome) == "testhost.example.org"
    os.unlink(os.path.join(qmailhome, "control", "me"))
    assert control.value(name, qmailhome) == literal
    write(qmailhome, name, b"set.example\n")
    assert control.value(name, qmailhome) == "set.example"


def test_locals_defaults_to_me(qmailhome):
    assert control.value("locals", qmailhome) == ["testhost.example.org"]
    os.unlink(os.path.join(qmailhome, "control", "me"))
    assert control.value("locals", qmailhome) == []


def test_group_credentials_fall_back_to_the_ldap_ones(qmailhome):
    write(qmailhome, "ldaplogin", b"cn=reader\n")
    write(qmailhome, "ldappassword", b"s3cret\n")
    assert control.value("ldapgrouplogin", qmailhome) == "cn=reader"
    assert control.value("ldapgrouppassword", qmailhome) == "s3cret"
    write(qmailhome, "ldapgrouplogin", b"cn=groups\n")
    assert control.value("ldapgrouppassword", qmailhome) == ""


def test_registry_value_reads_by_type(qmailhome):
    write(qmailhome, "rcpthosts", b"a.example\n#x\n")
    write(qmailhome, "databytes", b"5000000\n")
    write(qmailhome, "custombouncetext", b"raw\n\n")
    assert control.value("rcpthosts", qmailhome) == ["a.example"]
    assert control.value("databytes", qmailhome) == 5000000
    assert control.value("custombouncetext", qmailhome) == b"raw\n\n"
    write(qmailhome, "ldaptimeout", b"soon\n")
    assert control.value("ldaptimeout", qmailhome) == control.default("ldaptimeout", qmailhome)
    write(qmailhome, "ldaptimeout", b"%d\n" % (INT_MAX + 1))
    with pytest.raises(ControlError, match="ldaptimeout: line 1"):
        control.value("ldaptimeout", qmailhome)


def test_registry_users_files_live_in_users(qmailhome):
    with open(os.path.join(qmailhome, "users", "include"), "w") as f:
        f.write("joe\n# x\nann\n")
    assert control.value("users/include", qmailhome) == ["joe", "ann"]
    assert control.REGISTRY["users/cdb"].path(qmailhome) == os.path.join(qmailhome, "users", "cdb")
    assert control.REGISTRY["rcpthosts"].path(qmailhome) == os.path.join(qmailhome, "control", "rcpthosts")
