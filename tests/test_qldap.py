"""engine.qldap against a real slapd: control files, lookup rounds, filter escaping, entry rules,
failover, outage and reconnect."""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import control, qldap
from support.ldapenv import fresh_domain, point_at, write_control
from support.slapd import ROOTDN, ROOTPW, add_user, free_port
from support.slapd import slapd  # noqa: F401

USER = dict(homeDirectory="/home/u", qmailUID=1000, qmailGID=1000)


@pytest.fixture
def home(qmailhome, slapd):  # noqa: F811
    return point_at(qmailhome, slapd)


@pytest.fixture
def dom():
    return fresh_domain()


def directory(home):
    return qldap.Directory(qldap.Config.load(home))


def lookup(home, address):
    with directory(home) as d:
        return d.lookup(address)


def resolved(home, address, **kw):
    cfg = qldap.Config.load(home)
    with qldap.Directory(cfg) as d:
        entry, rnd = d.lookup(address)
    return qldap.resolve(entry, cfg, address, rnd, **kw)


def user(slapd, uid, mail, **attrs):  # noqa: F811
    return add_user(slapd, uid, mail, **{**USER, **attrs})


# -- control files ---------------------------------------------------------------

def test_config_defaults(qmailhome):
    write_control(qmailhome, "ldapserver", "ldap1.example\n# comment\nldap2.example:3890\n")
    cfg = qldap.Config.load(qmailhome)
    assert cfg.servers == ["ldap1.example", "ldap2.example:3890"]
    assert (cfg.basedn, cfg.objectclass, cfg.login, cfg.password) == ("", "", "", "")
    assert cfg.timeout == 30 and cfg.rebind is False
    assert (cfg.default_uid, cfg.default_gid, cfg.quota_size, cfg.quota_count) == (0, 0, 0, 0)
    assert cfg.default_dotmode == "ldaponly" and cfg.messagestore == ""
    assert cfg.localdelivery is True and cfg.cluster is False
    assert [qldap.server_uri(s) for s in cfg.servers] == [
        "ldap://ldap1.example:389/", "ldap://ldap2.example:3890/"]


def test_config_values(qmailhome):
    for name, text in dict(ldapserver="h", ldapbasedn="o=x", ldaptimeout="7", ldaprebind="1",
                           ldapuid="2000", ldapgid="2001", ldapmessagestore="/var/mail",
                           ldapdefaultdotmode="both", defaultquotasize="5000000",
                           defaultquotacount="100", ldaplocaldelivery="0", ldapcluster="1",
                           ldapclusterhosts="mx2.example\n", aliasdomains="alias.example:real.example",
                           ldapobjectclass="qmailUser", ldaplogin="cn=x", ldappassword="pw").items():
        write_control(qmailhome, name, text)
    cfg = qldap.Config.load(qmailhome)
    assert (cfg.basedn, cfg.timeout, cfg.rebind, cfg.default_uid, cfg.default_gid) == ("o=x", 7, True, 2000, 2001)
    assert cfg.messagestore == "/var/mail/"
    assert (cfg.default_dotmode, cfg.quota_size, cfg.quota_count) == ("both", 5000000, 100)
    assert cfg.localdelivery is False and cfg.cluster is True
    assert cfg.is_me("MX2.example") and cfg.is_me("testhost.example.org") and not cfg.is_me("mx3.example")
    assert cfg.aliasdomains.get("ALIAS.Example") == "real.example"
    assert (cfg.objectclass, cfg.login, cfg.password) == ("qmailUser", "cn=x", "pw")


def test_ldapmessagestore_of_one_char_is_unset(qmailhome):
    write_control(qmailhome, "ldapserver", "h")
    write_control(qmailhome, "ldapmessagestore", "/")
    assert qldap.Config.load(qmailhome).messagestore == ""


def test_missing_ldapserver_is_an_error(qmailhome):
    with pytest.raises(control.ControlError, match="ldapserver"):
        qldap.Config.load(qmailhome)


# -- the rounds (pure) --------------------------------------------------------------

def addresses(address, **kw):
    return [r.address for r in qldap.mail_rounds(address, **kw)]


def test_dash_ext_rounds_in_order():
    assert addresses("a-b-c@d") == ["a-b-c@d", "a-b-catchall@d", "a-catchall@d", "catchall@d"]
    assert addresses("a-b-c-d-e-f@x") == ["a-b-c-d-e-f@x", "a-b-c-d-catchall@x", "a-b-c-catchall@x",
                                         "a-b-catchall@x", "a-catchall@x", "catchall@x"]
    assert addresses("joe@d") == ["joe@d", "catchall@d"]
    assert addresses("-a@d") == ["-a@d", "catchall@d"]  # the 2019 infinite-loop fix
    assert addresses("a--b@d") == ["a--b@d", "a--catchall@d", "a-catchall@d", "catchall@d"]


def test_without_dash_ext_only_catchall():
    assert addresses("a-b-c@d", dash_ext=False) == ["a-b-c@d", "catchall@d"]


def test_round_extensions():
    rounds = qldap.mail_rounds("a-b-c@d")
    assert [(r.dash, r.ext) for r in rounds] == [("", ""), ("-", "c"), ("-", "b-c"), ("-", "a-b-c")]
    assert [r.index for r in rounds] == [0, 1, 2, 3] and rounds[0].exact


def test_last_at_splits_and_no_lookup_without_local_part():
    assert addresses("a@b@d") == ["a@b@d", "catchall@d"]
    assert addresses("nobody") == [] and addresses("@d") == []


# -- lookups against slapd ------------------------------------------------------------

def test_exact_mail_and_alternate(home, slapd, dom):  # noqa: F811
    dn = user(slapd, f"joe.{dom}", f"joe@{dom}", mailAlternateAddress=[f"jd@{dom}", f"j.d@{dom}"])
    for addr in (f"joe@{dom}", f"jd@{dom}", f"j.d@{dom}"):
        entry, rnd = lookup(home, addr)
        assert entry.dn == dn and rnd.index == 0 and rnd.exact


def test_lookup_is_case_insensitive(home, slapd, dom):  # noqa: F811
    dn = user(slapd, f"Kim.{dom}", f"kim@{dom}", mailAlternateAddress=[f"Kim.Smith@{dom}"])
    assert lookup(home, f"KIM@{dom.upper()}")[0].dn == dn
    assert lookup(home, f"kim.smith@{dom}")[0].dn == dn


def test_nothing_found(home, dom):
    assert lookup(home, f"nobody@{dom}") is None
    assert lookup(home, "no-at-sign") is None


def test_dash_extension_catchall_order(home, slapd, dom):  # noqa: F811
    user(slapd, f"c0.{dom}", f"catchall@{dom}")
    a = user(slapd, f"c1.{dom}", f"a-catchall@{dom}")
    ab = user(slapd, f"c2.{dom}", f"a-b-catchall@{dom}")
    exact = user(slapd, f"c3.{dom}", f"a-b-c@{dom}")
    entry, rnd = lookup(home, f"a-b-c@{dom}")
    assert entry.dn == exact and rnd.index == 0
    entry, rnd = lookup(home, f"a-b-x@{dom}")
    assert entry.dn == ab and (rnd.index, rnd.dash, rnd.ext) == (1, "-", "x")
    entry, rnd = lookup(home, f"a-y-z@{dom}")
    assert entry.dn == a and (rnd.address, rnd.ext) == (f"a-catchall@{dom}", "y-z")


def test_domain_catchall(home, slapd, dom):  # noqa: F811
    dn = user(slapd, f"catch.{dom}", f"catchall@{dom}")
    entry, rnd = lookup(home, f"who-ever@{dom}")
    assert entry.dn == dn and (rnd.dash, rnd.ext) == ("-", "who-ever")
    assert resolved(home, f"who-ever@{dom}").ext == "who-ever"


def test_catchall_as_alternate_address(home, slapd, dom):  # noqa: F811
    dn = user(slapd, f"list.{dom}", f"list@{dom}", mailAlternateAddress=[f"list-catchall@{dom}"])
    entry, rnd = lookup(home, f"list-subscribe@{dom}")
    assert entry.dn == dn and rnd.ext == "subscribe"


def test_aliasdomains(home, slapd, dom):  # noqa: F811
    dn = user(slapd, f"al.{dom}", f"al@{dom}")
    write_control(home, "aliasdomains", f"alias-{dom}:{dom}")
    entry, rnd = lookup(home, f"al@ALIAS-{dom.upper()}")
    assert entry.dn == dn and rnd.address == f"al@{dom}"
    assert lookup(home, f"al@other-{dom}") is None


@pytest.mark.parametrize("local", ["*", "v*", "*m", "v)(mail=*", "victim)(|(mail=*",
                                   "\\2a", "\\", "victim\0", "(victim)"])
def test_filter_injection_matches_nothing(home, slapd, local):  # noqa: F811
    dom = fresh_domain("inj")
    user(slapd, f"victim.{dom}", f"victim@{dom}")
    user(slapd, f"other.{dom}", f"vim@{dom}")
    assert lookup(home, f"{local}@{dom}") is None
    assert lookup(home, f"victim@{dom}") is not None  # the entry is there


def test_injection_in_domain_part(home, slapd, dom):  # noqa: F811
    user(slapd, f"v.{dom}", f"victim@{dom}")
    assert lookup(home, "victim@*") is None
    assert lookup(home, f"victim@{dom[:-3]}*") is None


def test_ldapobjectclass(home, slapd, dom):  # noqa: F811
    plain = ["top", "person", "organizationalPerson", "inetOrgPerson"]
    add_user(slapd, f"np.{dom}", f"np@{dom}", objectClass=plain)
    assert lookup(home, f"np@{dom}") is not None
    write_control(home, "ldapobjectclass", "qmailUser")
    assert lookup(home, f"np@{dom}") is None
    user(slapd, f"qu.{dom}", f"qu@{dom}")
    assert lookup(home, f"qu@{dom}") is not None


def test_too_many_results_stops_the_rounds(home, slapd, dom):  # noqa: F811
    user(slapd, f"d1.{dom}", f"dup@{dom}")
    user(slapd, f"d2.{dom}", f"x@{dom}", mailAlternateAddress=[f"dup@{dom}"])
    user(slapd, f"c.{dom}", f"catchall@{dom}")
    with pytest.raises(qldap.TooMany) as ei:
        lookup(home, f"dup@{dom}")
    assert ei.value.qlx == 156 and not ei.value.temporary
    assert ei.value.report == "DToo many results returned but needs to be unique. (#5.3.5)"


def test_lookup_uid(home, slapd, dom):  # noqa: F811
    dn = user(slapd, f"login.{dom}", f"login@{dom}")
    with directory(home) as d:
        assert d.lookup_uid(f"login.{dom}").dn == dn
        assert d.lookup_uid("*") is None and d.lookup_uid(f"login.{dom}*") is None


# -- accountStatus and the attribute rules ------------------------------------------

@pytest.mark.parametrize("value,status", [(None, None), ("active", "active"), ("noaccess", "noaccess"),
                                          ("NoAccess", "noaccess"), ("whatever", "active")])
def test_delivered_statuses(home, slapd, value, status):  # noqa: F811
    dom = fresh_domain("st")
    user(slapd, f"s.{dom}", f"s@{dom}", accountStatus=value)
    d = resolved(home, f"s@{dom}")
    assert d.status == status and d.kind == "local"


@pytest.mark.parametrize("value,err,qlx,report", [
    ("disabled", qldap.Disabled, 159, "DMailaddress is administratively disabled. (#5.2.1)"),
    ("DISABLED", qldap.Disabled, 159, "DMailaddress is administratively disabled. (#5.2.1)"),
    ("deleted", qldap.Deleted, 160, "DSorry, no mailbox here by that name. (#5.1.1)")])
def test_bounced_statuses(home, slapd, value, err, qlx, report):  # noqa: F811
    dom = fresh_domain("st")
    user(slapd, f"s.{dom}", f"s@{dom}", accountStatus=value)
    with pytest.raises(err) as ei:
        resolved(home, f"s@{dom}")
    assert (ei.value.qlx, ei.value.report, ei.value.temporary) == (qlx, report, False)


def test_home_and_store(home, slapd, dom):  # noqa: F811
    user(slapd, f"hs.{dom}", f"hs@{dom}", mailMessageStore="./Maildir/")
    d = resolved(home, f"hs@{dom}")
    assert (d.user, d.uid, d.gid, d.home, d.aliasempty) == (f"hs.{dom}", 1000, 1000, "/home/u", "./Maildir/")
    assert (d.dash, d.ext) == ("", "")


def test_home_only_uses_default_delivery(home, slapd, dom):  # noqa: F811
    user(slapd, f"h.{dom}", f"h@{dom}")
    d = resolved(home, f"h@{dom}")
    assert (d.home, d.aliasempty) == ("/home/u", None)


def test_store_only(home, slapd, dom):  # noqa: F811
    add_user(slapd, f"abs.{dom}", f"abs@{dom}", mailMessageStore="/var/mail/abs/", qmailUID=1000, qmailGID=1000)
    add_user(slapd, f"rel.{dom}", f"rel@{dom}", mailMessageStore="rel/Maildir/", qmailUID=1000, qmailGID=1000)
    d = resolved(home, f"abs@{dom}")
    assert (d.home, d.aliasempty) == ("/var/mail/abs/", None)
    with pytest.raises(qldap.IllVal):  # relative without control/ldapmessagestore
        resolved(home, f"rel@{dom}")
    write_control(home, "ldapmessagestore", "/srv/mail")
    assert resolved(home, f"rel@{dom}").home == "/srv/mail/rel/Maildir/"


def test_forward_only_entry(home, slapd, dom):  # noqa: F811
    add_user(slapd, f"fw.{dom}", f"fw@{dom}", mailForwardingAddress=["x@remote.example", "y:z@remote.example"])
    d = resolved(home, f"fw@{dom}")
    assert d.kind == "forwardonly" and d.user == "alias" and (d.dash, d.ext) == ("-", "fw")
    assert d.aliasempty == qldap.ALIASDEVNULL
    env = d.local_env()
    assert env["QMAILFORWARDS"] == "x@remote.example:y\\:z@remote.example"
    assert (env["QMAILDOTMODE"], env["QMAILMODE"]) == ("ldaponly", "forwardonly")


def test_no_store_and_no_forward_is_needed(home, slapd, dom):  # noqa: F811
    add_user(slapd, f"nothing.{dom}", f"nothing@{dom}")
    with pytest.raises(qldap.Needed) as ei:
        resolved(home, f"nothing@{dom}")
    assert ei.value.report == "DLDAP attribute is not given but mandatory. (#5.3.5)"


@pytest.mark.parametrize("attrs", [
    dict(homeDirectory="relative/home"), dict(homeDirectory="/home/../etc"),
    dict(homeDirectory="/home/a b"), dict(mailMessageStore="../Maildir/"),
    dict(mailMessageStore="-x/"), dict(qmailUID=99), dict(qmailUID=65536), dict(qmailGID=0),
    dict(qmailDotMode="Both"), dict(qmailDotMode="sometimes"),
    dict(deliveryProgramPath="/bin/prog; rm -rf /"), dict(deliveryProgramPath="/bin/x `id`"),
    dict(deliveryProgramPath="-/bin/x")])
def test_illegal_values(home, slapd, attrs):  # noqa: F811
    dom = fresh_domain("ill")
    user(slapd, f"i.{dom}", f"i@{dom}", **attrs)
    with pytest.raises(qldap.IllVal) as ei:
        resolved(home, f"i@{dom}")
    assert ei.value.qlx == 158 and ei.value.report == "DIllegal value in LDAP attribute. (#5.3.5)"


def test_bad_uid_attribute(home, slapd, dom):  # noqa: F811
    add_user(slapd, "bad/uid", f"bu@{dom}", **USER)
    with pytest.raises(qldap.IllVal):
        resolved(home, f"bu@{dom}")


def test_uid_gid_defaults(home, slapd, dom):  # noqa: F811
    add_user(slapd, f"v.{dom}", f"v@{dom}", homeDirectory="/home/v")
    with pytest.raises(qldap.Needed):
        resolved(home, f"v@{dom}")
    write_control(home, "ldapuid", "3000")
    write_control(home, "ldapgid", "3001")
    d = resolved(home, f"v@{dom}")
    assert (d.uid, d.gid) == (3000, 3001)


def test_dotmodes(home, slapd, dom):  # noqa: F811
    for i, (value, want) in enumerate([("LDAPONLY", "ldaponly"), ("ldapwithprog", "ldapwithprog"),
                                       ("dotonly", "dotonly"), ("both", "both"), ("none", "none"),
                                       (None, "ldaponly")]):
        user(slapd, f"dm{i}.{dom}", f"dm{i}@{dom}", qmailDotMode=value)
        assert resolved(home, f"dm{i}@{dom}").dotmode == want
    write_control(home, "ldapdefaultdotmode", "dotonly")
    assert resolved(home, f"dm5@{dom}").local_env()["QMAILDOTMODE"] == "dotonly"


def test_quota_defaults_and_overrides(home, slapd, dom):  # noqa: F811
    user(slapd, f"q0.{dom}", f"q0@{dom}")
    user(slapd, f"q1.{dom}", f"q1@{dom}", mailQuotaSize=1000000, mailQuotaCount=0)
    user(slapd, f"q2.{dom}", f"q2@{dom}", mailQuotaCount=50)
    assert resolved(home, f"q0@{dom}").local_env()["MAILDIRQUOTA"] is None
    write_control(home, "defaultquotasize", "2000000")
    write_control(home, "defaultquotacount", "200")
    assert resolved(home, f"q0@{dom}").maildirquota == "2000000S,200C"
    assert resolved(home, f"q1@{dom}").maildirquota == "1000000S"  # an explicit 0 overrides the default
    assert resolved(home, f"q2@{dom}").maildirquota == "2000000S,50C"


def test_mail_size_max(home, slapd, dom):  # noqa: F811
    user(slapd, f"mx.{dom}", f"mx@{dom}", mailSizeMax=1000)
    assert resolved(home, f"mx@{dom}", message_size=1000).size_max == 1000
    with pytest.raises(qldap.MaxSize) as ei:
        resolved(home, f"mx@{dom}", message_size=1001)
    assert ei.value.report == "DThe message exeeded the maximum size the user accepts. (#5.2.3)"


def test_local_env(home, slapd, dom):  # noqa: F811
    user(slapd, f"env.{dom}", f"env@{dom}", mailForwardingAddress=["a@x.example", "b:c@y.example"],
         deliveryProgramPath=["/usr/bin/prog -a", "/bin/x arg:with:colons"],
         deliveryMode=["Reply", "noLocal"], mailReplyText="I am away:\nback soon",
         qmailDotMode="ldapwithprog")
    env = resolved(home, f"env@{dom}").local_env()
    assert env == {"QLDAPGROUP": None, "MAILDIRQUOTA": None,
                   "QMAILFORWARDS": "a@x.example:b\\:c@y.example",
                   "QMAILDELIVERYPROGRAM": "/usr/bin/prog -a:/bin/x arg\\:with\\:colons",
                   "QMAILREPLYTEXT": "I am away:\nback soon", "QMAILMODE": "reply:nolocal",
                   "QMAILDOTMODE": "ldapwithprog"}
    assert qldap.split_values(env["QMAILFORWARDS"]) == ["a@x.example", "b:c@y.example"]


def test_reply_text_needs_a_delivery_mode(home, slapd, dom):  # noqa: F811
    user(slapd, f"rt.{dom}", f"rt@{dom}", mailReplyText="away")
    env = resolved(home, f"rt@{dom}").local_env()
    assert env["QMAILREPLYTEXT"] is None and env["QMAILMODE"] is None


def test_qmail_group(home, slapd, dom):  # noqa: F811
    dn = add_user(slapd, f"grp.{dom}", f"grp@{dom}", mailAlternateAddress=[f"grp-catchall@{dom}"],
                  mailMessageStore="/var/qmail/groups/grp/", rfc822member=["m@x.example"],
                  qmailUID=1000, qmailGID=1000,
                  objectClass=["top", "person", "organizationalPerson", "inetOrgPerson",
                               "qmailUser", "qmailGroup"])
    d = resolved(home, f"grp@{dom}")
    assert d.group_dn == dn and d.local_env()["QLDAPGROUP"] == dn
    assert resolved(home, f"grp-confirm-123@{dom}").ext == "confirm-123"


def test_cluster_forward(home, slapd, dom):  # noqa: F811
    user(slapd, f"cl.{dom}", f"cl@{dom}", mailHost="mx9.example")
    user(slapd, f"me.{dom}", f"me@{dom}", mailHost="TESTHOST.example.org")
    assert resolved(home, f"cl@{dom}").kind == "local"  # ldapcluster off
    write_control(home, "ldapcluster", "1")
    d = resolved(home, f"cl@{dom}")
    assert d.kind == "cluster" and d.mailhost == "mx9.example"
    assert resolved(home, f"me@{dom}").kind == "local"


def test_single_valued_read_of_multi_value(home, slapd, dom):  # noqa: F811
    user(slapd, f"mv.{dom}", f"mv@{dom}", deliveryMode=["reply"])
    entry, _ = lookup(home, f"mv@{dom}")
    with pytest.raises(qldap.TooMany):
        entry.single("objectClass")


def test_checks():
    assert qldap.check_user("joe.doe@x_y-z#1") and not qldap.check_user("-joe")
    assert not qldap.check_user("jo/e") and not qldap.check_user("jo e") and not qldap.check_user("jöe")
    assert qldap.check_path("/home/a:b=c@d/Maildir/") and qldap.check_path("/a/.../b/")
    assert not qldap.check_path("../x") and not qldap.check_path("/a/../b") and not qldap.check_path("/a b")
    assert qldap.check_prog("/usr/bin/x -a 'q' \"w\" a+b,c\\d") and not qldap.check_prog("x|y")
    assert all(not qldap.check_prog(f"/bin/x {c}") for c in "!$%&()*;<>?[]^`{|}~\r")


# -- errors, failover, outage, reconnect ------------------------------------------------

def test_qlx_codes_and_texts():
    want = {152: "ZTemporary failure in LDAP lookup. (#4.4.3).",
            153: "ZUnable to login into LDAP server, bad credentials. (#4.4.3)",
            154: "ZTimeout while performing search on LDAP server. (#4.4.3)",
            155: "ZUnable to contact LDAP server. (#4.4.3)",
            156: "DToo many results returned but needs to be unique. (#5.3.5)",
            157: "DLDAP attribute is not given but mandatory. (#5.3.5)",
            158: "DIllegal value in LDAP attribute. (#5.3.5)"}
    for code, report in want.items():
        assert qldap.QLX_ERRORS[code].report == report
        assert qldap.QLX_ERRORS[code]().temporary == report.startswith("Z")


def test_failover_to_second_server(home, slapd, dom):  # noqa: F811
    dn = user(slapd, f"fo.{dom}", f"fo@{dom}")
    dead = f"127.0.0.1:{free_port()}"
    write_control(home, "ldapserver", f"{dead}\n{slapd.hostport}\n")
    with directory(home) as d:
        assert d.lookup(f"fo@{dom}")[0].dn == dn
        assert d.server == slapd.hostport


def test_no_server_reachable_is_temporary(home):
    write_control(home, "ldapserver", f"127.0.0.1:{free_port()}\n127.0.0.1:{free_port()}\n")
    with pytest.raises(qldap.BindTimeout) as ei:
        lookup(home, "x@y.example")
    assert ei.value.temporary and ei.value.qlx == 155


def test_bad_credentials(home):
    write_control(home, "ldaplogin", ROOTDN)
    write_control(home, "ldappassword", "wrong")
    with pytest.raises(qldap.LdapAuth) as ei:
        lookup(home, "x@y.example")
    assert ei.value.temporary and ei.value.qlx == 153


def test_bind_with_ldaplogin(home, slapd, dom):  # noqa: F811
    write_control(home, "ldaplogin", ROOTDN)
    write_control(home, "ldappassword", ROOTPW)
    dn = user(slapd, f"li.{dom}", f"li@{dom}")
    assert lookup(home, f"li@{dom}")[0].dn == dn


def test_rebind_check(home, slapd, dom):  # noqa: F811
    dn = user(slapd, f"rb.{dom}", f"rb@{dom}")
    slapd.conn().passwd_s(dn, None, "s3cret")
    with directory(home) as d:
        assert d.check_bind(dn, "s3cret")
        assert not d.check_bind(dn, "wrong") and not d.check_bind(dn, "")


def test_hung_server_times_out_within_ldaptimeout(home, slapd, dom):  # noqa: F811
    user(slapd, f"hang.{dom}", f"hang@{dom}")
    write_control(home, "ldaptimeout", "1")
    with directory(home) as d:
        assert d.lookup(f"hang@{dom}") is not None
        slapd.pause()
        try:
            t0 = time.monotonic()
            with pytest.raises(qldap.SearchTimeout) as ei:
                d.lookup(f"hang@{dom}")
            assert time.monotonic() - t0 < 2.5 and ei.value.temporary
            t0 = time.monotonic()
            with pytest.raises(qldap.BindTimeout) as ei:  # a new bind hangs too
                d.lookup(f"hang@{dom}")
            assert time.monotonic() - t0 < 2.5 and ei.value.temporary
        finally:
            slapd.resume()
        assert d.lookup(f"hang@{dom}") is not None  # and it recovers


def test_reconnect_after_restart(home, slapd, dom):  # noqa: F811
    dn = user(slapd, f"rs.{dom}", f"rs@{dom}")
    with directory(home) as d:
        assert d.lookup(f"rs@{dom}")[0].dn == dn
        slapd.restart()
        assert d.lookup(f"rs@{dom}")[0].dn == dn


def test_server_down_mid_session_is_temporary(home, slapd, dom):  # noqa: F811
    user(slapd, f"sd.{dom}", f"sd@{dom}")
    with directory(home) as d:
        assert d.lookup(f"sd@{dom}") is not None
        slapd.stop()
        try:
            with pytest.raises(qldap.BindTimeout) as ei:
                d.lookup(f"sd@{dom}")
            assert ei.value.temporary
        finally:
            slapd.start()


def test_python_ldap_filter_error_is_ldapfail(home):
    with directory(home) as d:
        with pytest.raises(qldap.LdapFail):
            d.search("(mail=unbalanced")


PROP_DOMAIN = "prop.example"


@pytest.fixture(scope="module")
def prop_users(slapd):  # noqa: F811
    for i, name in enumerate(["a", "ab", "a-b", "b*", "victim"]):
        user(slapd, f"prop{i}", f"{name}@{PROP_DOMAIN}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(local=st.text(alphabet=st.sampled_from("ab*()\\\0-@ =|&!~<>"), min_size=1, max_size=12))
def test_any_local_part_only_finds_itself(home, prop_users, local):
    """Whatever the characters, a lookup is an equality match: slapd accepts the filter and the
    only entry it can return is one whose address is the one asked for, as LDAP's caseIgnoreIA5Match
    compares (RFC 4518: case and insignificant spaces do not count)."""
    with directory(home) as d:
        for rnd in qldap.mail_rounds(f"{local}@{PROP_DOMAIN}"):
            for entry in d.search(qldap.address_filter(rnd.address), ["mail"]):
                assert ldap_equal(entry.values("mail")[0], rnd.address)


def ldap_equal(a, b):
    """caseIgnoreIA5Match: ASCII case ignored, leading/trailing spaces dropped, inner runs as one."""
    def prep(s):
        return " ".join(w for w in s.lower().split(" ") if w)
    return prep(a) == prep(b)


def test_unparsable_ldapserver_line_is_skipped(home, slapd, dom):  # noqa: F811
    dn = user(slapd, f"up.{dom}", f"up@{dom}")
    write_control(home, "ldapserver", f"ldap://[bad\n{slapd.hostport}\n")
    assert lookup(home, f"up@{dom}")[0].dn == dn


def _filter_mail_model(address):
    """qldap-filter.c filter_mail (DASH_EXT) and qmail-lspawn's dash/ext, step by step as the C code
    walks `ext`/`extcnt`: [(address, dash, ext)] per round."""
    at = address.rfind("@")
    local, domain = address[:at], address[at + 1:]
    rounds, ext, extcnt = [(address, "", "")], at, -1
    while extcnt != 0:
        if ext == at:
            ext, extcnt = 0, 1
            while ext < at and extcnt <= qldap.DASH_EXT_LEVELS:
                extcnt += address[ext] == "-"
                ext += 1
        while ext != 0:
            ext -= 1
            if ext <= 0 or address[ext] == "-":
                break
        extcnt -= 1
        if ext == 0:
            extcnt = 0
        skip, seen = 0, 0  # qmail-lspawn: the extension starts after `extcnt` dashes
        while seen < extcnt and skip < at:
            seen += address[skip] == "-"
            skip += 1
        rounds.append((local[:ext] + ("-" if extcnt > 0 else "") + f"catchall@{domain}", "-", local[skip:]))
    return rounds


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab-", min_size=1, max_size=14))
def test_rounds_follow_filter_mail_step_by_step(local):
    address = local + "@d.example"
    assert [(r.address, r.dash, r.ext) for r in qldap.mail_rounds(address)] == _filter_mail_model(address)
