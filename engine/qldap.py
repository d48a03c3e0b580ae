"""The LDAP user directory: qmail-ldap's qldap.c, qldap-filter.c, check.c and the
lookup half of qmail-lspawn.c (qldap_get).

What it does
  * reads the LDAP control files (ldapserver, ldapbasedn, ldaplogin,
    ldappassword, ldaptimeout, ldaprebind, ldapobjectclass, ldapuid, ldapgid,
    ldapmessagestore, ldapdefaultdotmode, defaultquotasize, defaultquotacount,
    ldaplocaldelivery, ldapcluster, ldapclusterhosts, aliasdomains) into a
    `Config`;
  * keeps one python-ldap connection per process (`Directory`), bound with
    ldaplogin/ldappassword, trying the ldapserver lines in order (failover)
    and reconnecting when the server went away; ldaptimeout bounds the TCP
    connect, the bind and every search;
  * builds the search filters (`mail_rounds`, `uid_filter`) and runs the
    address lookup of qmail-lspawn: mail or mailAlternateAddress equal to the
    address, then the dash-extension catchall rounds, then catchall@domain,
    with control/aliasdomains applied to the domain first;
  * reads an entry's attributes with qmail-ldap's rules (`Entry`) and turns
    them into the delivery that qmail-lspawn hands to qmail-local
    (`resolve` -> `Delivery`, `Delivery.local_env`).

Errors are `QldapError` subclasses carrying qmail-lspawn's QLX exit code and
report text (spec 1.3). A directory that is down, refuses the bind or does
not answer within ldaptimeout is a temporary failure (Z..., #4.4.3), never a
bounce.

SECURITY: every user-supplied value in a filter is escaped per RFC 4515
(engine._ldapfilter_py / ext/ldapfilter.pyx), so an address containing * ( ) \\ or NUL
cannot widen the search. control/ldapobjectclass is inserted verbatim, as in
qmail-ldap, because administrators use it to inject a compound filter. Values
read from the directory are checked (uid, paths, programs) before they can
reach a shell or the file system, as check.c does.
"""

import re
from dataclasses import dataclass, field

import ldap

from engine import compiled, conf, control

_ldapfilter = compiled.load("ldapfilter")

# -- constants of qmail-ldap.h --------------------------------------------

CATCH_ALL = "catchall"
DASH_EXT_LEVELS = 4
DASH_EXT = True  # qmail-ldap's DASH_EXT build flag; the multi-level catchall rounds
UID_MIN, UID_MAX = 100, 65535
GID_MIN, GID_MAX = 100, 65535
DEFAULT_TIMEOUT = 30
DEFAULT_PORT = 389
ALIASDEVNULL = ('|echo "Unable to deliver mail: account incorrectly configured. (#5.3.5)"; '
                "exit 100")

DOTMODES = ("ldaponly", "ldapwithprog", "dotonly", "both", "none")
MODE_FORWARDONLY = "forwardonly"
KNOWN_MODES = ("nolocal", "nombox", "noforward", "noprogram", "reply",
               "local", "forward", "program", "noreply")
GROUP_OBJECTCLASS = "qmailgroup"

# what qmail-lspawn asks the directory for
DELIVERY_ATTRS = ["uid", "qmailUID", "qmailGID", "accountStatus", "mailHost",
                  "mailMessageStore", "homeDirectory", "mailQuotaSize", "mailQuotaCount",
                  "mailForwardingAddress", "deliveryProgramPath", "deliveryMode",
                  "mailReplyText", "qmailDotMode", "mailSizeMax", "objectClass"]


# -- errors: qmail-lspawn's QLX codes and report texts ----------------------

class QldapError(Exception):
    """A lookup failure with qmail-lspawn's exit code `qlx` and report `report` (K/Z/D + text)."""

    qlx = 152
    report = "ZTemporary failure in LDAP lookup. (#4.4.3)."

    def __init__(self, detail=""):
        super().__init__(detail or self.report[1:])
        self.detail = detail

    @property
    def temporary(self):
        return self.report.startswith("Z")

    @property
    def text(self):
        """The report without its status letter (what qmail-verify / smtpd show)."""
        return self.report[1:]


class LdapFail(QldapError):
    qlx, report = 152, "ZTemporary failure in LDAP lookup. (#4.4.3)."


class LdapAuth(QldapError):
    qlx, report = 153, "ZUnable to login into LDAP server, bad credentials. (#4.4.3)"


class SearchTimeout(QldapError):
    qlx, report = 154, "ZTimeout while performing search on LDAP server. (#4.4.3)"


class BindTimeout(QldapError):
    qlx, report = 155, "ZUnable to contact LDAP server. (#4.4.3)"


class TooMany(QldapError):
    qlx, report = 156, "DToo many results returned but needs to be unique. (#5.3.5)"


class Needed(QldapError):
    qlx, report = 157, "DLDAP attribute is not given but mandatory. (#5.3.5)"


class IllVal(QldapError):
    qlx, report = 158, "DIllegal value in LDAP attribute. (#5.3.5)"


class Disabled(QldapError):
    qlx, report = 159, "DMailaddress is administratively disabled. (#5.2.1)"


class Deleted(QldapError):
    qlx, report = 160, "DSorry, no mailbox here by that name. (#5.1.1)"


class MaxSize(QldapError):
    qlx, report = 150, "DThe message exeeded the maximum size the user accepts. (#5.2.3)"


QLX_ERRORS = {cls.qlx: cls for cls in (LdapFail, LdapAuth, SearchTimeout, BindTimeout, TooMany,
                                       Needed, IllVal, Disabled, Deleted, MaxSize)}


# -- control files -----------------------------------------------------------

@dataclass
class Config:
    """The LDAP control files of spec 2.2, with qmail-ldap's defaults."""

    servers: list
    basedn: str = ""
    objectclass: str = ""
    login: str = ""
    password: str = ""
    timeout: int = DEFAULT_TIMEOUT
    rebind: bool = False
    default_uid: int = 0
    default_gid: int = 0
    messagestore: str = ""
    default_dotmode: str = "ldaponly"
    quota_size: int = 0
    quota_count: int = 0
    localdelivery: bool = True
    cluster: bool = False
    me: str = ""
    clusterhosts: list = field(default_factory=list)
    aliasdomains: control.ConstMap = field(default_factory=control.ConstMap)
    dash_ext: bool = DASH_EXT
    dupealias: bool = False  # DUPEALIAS: several entries for an address go to the user dupealias

    @classmethod
    def load(cls, home=None, login_fallback=False):
        """Read ~/control. ldapserver is required (ControlError when missing).

        `login_fallback`: an unreadable ldaplogin/ldappassword means an anonymous
        bind (qmail-verify, auth_smtp, qmail-group, qmail-ldaplookup) instead of
        an error (qmail-lspawn, auth_pop).
        """
        servers = control.read_list("ldapserver", None, home)
        if servers is None:
            raise control.ControlError(f"unable to read {control.path('ldapserver', home)}: "
                                       "file does not exist")
        login, password = _read_credentials(home, login_fallback)
        cfg = cls(servers=servers, login=login, password=password)
        cfg.basedn = control.read_line("ldapbasedn", "", home)
        cfg.objectclass = control.read_line("ldapobjectclass", "", home)
        cfg.timeout = control.read_int("ldaptimeout", DEFAULT_TIMEOUT, home)
        cfg.rebind = control.read_int("ldaprebind", 0, home) != 0
        cfg.default_uid = control.read_int("ldapuid", 0, home)
        cfg.default_gid = control.read_int("ldapgid", 0, home)
        cfg.messagestore = _messagestore_prefix(control.read_line("ldapmessagestore", "", home))
        cfg.default_dotmode = control.read_line("ldapdefaultdotmode", "ldaponly", home)
        cfg.quota_size = control.read_ulong("defaultquotasize", 0, home)
        cfg.quota_count = control.read_ulong("defaultquotacount", 0, home)
        cfg.localdelivery = control.read_int("ldaplocaldelivery", 1, home) != 0
        cfg.cluster = control.read_int("ldapcluster", 0, home) != 0
        cfg.me = control.me(home) or ""
        if cfg.cluster:
            cfg.clusterhosts = control.read_list("ldapclusterhosts", [], home)
        cfg.dupealias = control.read_int("ldapdupealias", 0, home) != 0
        cfg.aliasdomains = control.ConstMap(control.read_list("aliasdomains", [], home), values=True)
        return cfg

    def is_me(self, host):
        """mailHost names this host: control/me or a line of ldapclusterhosts (case-insensitive)."""
        return host in control.ConstMap([self.me, *self.clusterhosts])


def _read_credentials(home, fallback):
    try:
        return (control.read_line("ldaplogin", "", home),
                control.read_line("ldappassword", "", home))
    except control.ControlError:
        if fallback:
            return "", ""
        raise


def _messagestore_prefix(prefix):
    """ldapmessagestore with a '/' appended; one character or less counts as unset (qldap.c)."""
    if len(prefix) <= 1:
        return ""
    return prefix if prefix.endswith("/") else prefix + "/"


def server_uri(line):
    """An ldapserver line (host, host:port or an ldap:// URL) as a URI for python-ldap."""
    if "://" in line:
        return line
    host, sep, port = line.rpartition(":")
    if not sep or not port.isdigit():
        host, port = line, str(DEFAULT_PORT)
    return f"ldap://{host}:{port}/"


# -- filters (the compiled kernel engine._ldapfilter_c or its pure twin) ----------

escape = _ldapfilter.escape
wrap_objectclass = _ldapfilter.wrap_objectclass
address_filter = _ldapfilter.address_filter
uid_filter = _ldapfilter.uid_filter


@dataclass(frozen=True)
class Round:
    """One lookup round: the address searched and what qmail-local gets as dash/ext on a hit.

    index 0 is the exact address; catchall rounds follow. `dash` is "" for the
    exact round and "-" for catchall rounds; `ext` is the rest of the local part
    after the matched prefix (the whole local part for catchall@domain).
    """

    index: int
    address: str
    dash: str
    ext: str

    @property
    def exact(self):
        return self.index == 0


def mail_rounds(address, aliasdomains=None, dash_ext=DASH_EXT):
    """The lookup rounds for `address` in order (qldap-filter.c filter_mail); [] when no lookup.

    The last '@' splits local part and domain; no '@' or an empty local part
    means no LDAP lookup. The domain is replaced through control/aliasdomains.
    With DASH_EXT only the first DASH_EXT_LEVELS dashes are considered:
    a-b-c@d -> a-b-c@d, a-b-catchall@d, a-catchall@d, catchall@d.
    """
    at = address.rfind("@")
    if at <= 0:
        return []
    local, domain = address[:at], address[at + 1:]
    if aliasdomains is not None:
        domain = aliasdomains.get(domain) or domain
    rounds = [Round(0, f"{local}@{domain}", "", "")]
    if dash_ext:
        for cut in reversed(_dash_positions(local)):
            rounds.append(Round(len(rounds), f"{local[:cut]}{conf.BREAK}{CATCH_ALL}@{domain}",
                                conf.BREAK, local[cut + 1:]))
    rounds.append(Round(len(rounds), f"{CATCH_ALL}@{domain}", conf.BREAK, local))
    return rounds


def _dash_positions(local):
    """Positions of the first DASH_EXT_LEVELS dashes, without one at position 0 (that goes to catchall@)."""
    found = [i for i, c in enumerate(local) if c == conf.BREAK][:DASH_EXT_LEVELS]
    return [i for i in found if i > 0]


# -- attribute checks (check.c) ---------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_USER_CHARS = frozenset(_ALNUM + "#-._@")
_PATH_CHARS = frozenset(_ALNUM + "#-._@/:=")
_PROG_CHARS = frozenset(_ALNUM + "#-._@/:=" + " \t\n\"'+,\\")
_NOT_FIRST = "-"
_DOTDOT_SLASH = re.compile(r"(^|/)(\.\.)+/")


def check_user(s):
    """uid: alphanumerics and @ _ . - #, not starting with '-'."""
    return _charset_ok(s, _USER_CHARS)


def check_path(s):
    """A path: alphanumerics and @ _ . / : = - #, no leading '-', and no '..' that ends at a '/'
    (check.c sanitypathcheckb: a run of dots counts as '..' when it starts a component and its
    length is even, so '../', 'a/../' and '..../' are refused, '.../' and 'a../' are not)."""
    return _charset_ok(s, _PATH_CHARS) and not _DOTDOT_SLASH.search(s)


def check_prog(s):
    """A deliveryProgramPath: no shell metacharacters (RESTRICT_PROG), no leading '-'."""
    return _charset_ok(s, _PROG_CHARS)


def _charset_ok(s, allowed):
    return not s.startswith(_NOT_FIRST) and all(c in allowed for c in s)


# -- multi-value joining (qldap_get_attr MULTI_VALUE) -------------------------

def join_values(values):
    """Values joined with ':', a ':' inside a value written as '\\:' (QMAILFORWARDS etc.)."""
    return ":".join(v.replace(":", "\\:") for v in values)


def split_values(joined):
    """Inverse of join_values."""
    out, cur, i = [], [], 0
    while i < len(joined):
        c = joined[i]
        if c == "\\" and joined[i + 1:i + 2] == ":":
            cur.append(":")
            i += 2
            continue
        if c == ":":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


# -- entries -------------------------------------------------------------------

def _decode(b):
    return b.decode("utf-8", "surrogateescape")


class Entry:
    """One directory entry with qmail-ldap's attribute rules (attribute names case-insensitive)."""

    def __init__(self, dn, attrs):
        self.dn = dn
        self._attrs = {k.lower(): [_decode(v) for v in vals] for k, vals in attrs.items()}

    def values(self, name):
        """All values of `name`, or None when absent."""
        return self._attrs.get(name.lower())

    def single(self, name):
        """The one value of `name`, None when absent; several values -> TooMany."""
        vals = self.values(name)
        if vals is None:
            return None
        if len(vals) > 1:
            raise TooMany(f"{name} has {len(vals)} values but must be single")
        return vals[0]

    def ulong(self, name):
        """A decimal attribute; None when absent; anything but digits -> IllVal."""
        v = self.single(name)
        if v is None:
            return None
        if not v.isascii() or (v and not v.isdigit()):
            raise IllVal(f"{name}: not a decimal number: {v!r}")
        return int(v or "0")

    # qldap_get_status
    def status(self):
        """accountStatus lower-cased: active (also for unknown values), noaccess, disabled,
        deleted; None when absent."""
        v = self.single("accountStatus")
        if v is None:
            return None
        v = v.lower()
        return v if v in ("noaccess", "disabled", "deleted") else "active"

    # qldap_get_quota
    def quota(self, cfg):
        """(size, count, size_max): mailQuotaSize/Count override the defaults even when 0."""
        size_max = self.ulong("mailSizeMax") or 0
        size = self.ulong("mailQuotaSize")
        count = self.ulong("mailQuotaCount")
        return (cfg.quota_size if size is None else size,
                cfg.quota_count if count is None else count, size_max)

    # qldap_get_mailstore
    def mailstore(self, cfg):
        """(home, aliasempty) per spec 3.6; aliasempty None = qmail-start's default.

        Neither homeDirectory nor mailMessageStore -> Needed (the caller makes it a
        forward-only alias delivery).
        """
        home = self.single("homeDirectory") or ""
        if home and (not home.startswith("/") or not check_path(home)):
            raise IllVal(f"homeDirectory: illegal path {home!r}")
        store = self.single("mailMessageStore") or ""
        if store and not check_path(store):
            raise IllVal(f"mailMessageStore: illegal path {store!r}")
        if home:
            return home, (store or None)
        if store:
            if not store.startswith("/"):
                if not cfg.messagestore:
                    raise IllVal(f"mailMessageStore {store!r} is relative and "
                                 "control/ldapmessagestore is not set")
                store = cfg.messagestore + store
            return store, None
        raise Needed("neither homeDirectory nor mailMessageStore")

    # qldap_get_user
    def user(self):
        v = self.single("uid")
        if v is None:
            raise Needed("uid missing")
        if not check_user(v):
            raise IllVal(f"uid: illegal value {v!r}")
        return v

    # qldap_get_uid / qldap_get_gid
    def qmail_uid(self, cfg):
        return self._id("qmailUID", cfg.default_uid, UID_MIN, UID_MAX)

    def qmail_gid(self, cfg):
        return self._id("qmailGID", cfg.default_gid, GID_MIN, GID_MAX)

    def _id(self, name, default, low, high):
        v = self.ulong(name)
        if v is None:
            if default:
                return default
            raise Needed(f"{name} missing and no default in control")
        if not low <= v <= high:
            raise IllVal(f"{name} {v} outside {low}..{high}")
        return v

    # qldap_get_dotmode
    def dotmode(self, cfg):
        """qmailDotMode: ldaponly case-insensitively, the others exact lower case, else IllVal;
        ldapdefaultdotmode (unchecked) when absent."""
        v = self.single("qmailDotMode")
        if v is None:
            return cfg.default_dotmode
        if v.lower() == "ldaponly":
            return "ldaponly"
        if v in DOTMODES:
            return v
        raise IllVal(f"qmailDotMode: illegal value {v!r}")

    def programs(self):
        """deliveryProgramPath values, each checked (IllVal on shell metacharacters); None when absent."""
        progs = self.values("deliveryProgramPath")
        for p in progs or ():
            if not check_prog(p):
                raise IllVal(f"deliveryProgramPath: illegal program {p!r}")
        return progs

    def group_dn(self):
        """The DN when an objectClass value starts with qmailGroup (case-insensitive), else None."""
        classes = self.values("objectClass")
        if classes is None:
            raise Needed("objectClass missing")
        return self.dn if any(c.lower().startswith(GROUP_OBJECTCLASS) for c in classes) else None


# -- the delivery qmail-lspawn derives from an entry ---------------------------

@dataclass
class Delivery:
    """What qmail-lspawn runs qmail-local with, derived from one entry (spec 3.4-3.7).

    kind: "local" (qmail-local as user/uid/gid in home), "forwardonly" (alias
    user, forwards only; uid/gid/home come from the alias user's passwd entry),
    or "cluster" (qmail-forward to mailhost; nothing else resolved).
    """

    dn: str
    address: str
    round: Round
    kind: str = "local"
    status: str = None
    mailhost: str = None
    user: str = None
    uid: int = None
    gid: int = None
    home: str = None
    aliasempty: str = None  # None: qmail-start's default delivery
    quota_size: int = 0
    quota_count: int = 0
    size_max: int = 0
    forwards: list = None
    programs: list = None
    reply_text: str = None
    modes: list = None
    dotmode: str = None
    group_dn: str = None

    @property
    def dash(self):
        return conf.BREAK if self.kind == "forwardonly" else self.round.dash

    @property
    def ext(self):
        if self.kind == "forwardonly":
            return self.address[:self.address.rfind("@")]
        return self.round.ext

    @property
    def maildirquota(self):
        """MAILDIRQUOTA: '<n>S,<n>C' with zero parts left out; None when both are 0."""
        parts = []
        if self.quota_size:
            parts.append(f"{self.quota_size}S")
        if self.quota_count:
            parts.append(f"{self.quota_count}C")
        return ",".join(parts) or None

    def local_env(self):
        """The variables qmail-lspawn sets for qmail-local; None means 'unset it'."""
        if self.kind == "forwardonly":
            return {"QMAILFORWARDS": join_values(self.forwards), "QMAILDOTMODE": "ldaponly",
                    "QMAILMODE": MODE_FORWARDONLY, "QMAILDELIVERYPROGRAM": None,
                    "QMAILREPLYTEXT": None, "MAILDIRQUOTA": None, "QLDAPGROUP": None}
        return {
            "QLDAPGROUP": self.group_dn,
            "MAILDIRQUOTA": self.maildirquota,
            "QMAILFORWARDS": join_values(self.forwards) if self.forwards else None,
            "QMAILDELIVERYPROGRAM": join_values(self.programs) if self.programs else None,
            # without a deliveryMode the reply text is dropped too (qmail-lspawn.c)
            "QMAILREPLYTEXT": self.reply_text if self.modes else None,
            "QMAILMODE": join_values(self.modes).lower() if self.modes else None,
            "QMAILDOTMODE": self.dotmode,
        }


def resolve(entry, cfg, address, rnd, message_size=None):
    """The Delivery for a hit, checked in qmail-lspawn's order (qldap_get).

    Raises Disabled/Deleted for those account states, MaxSize when
    `message_size` exceeds mailSizeMax, Needed/IllVal/TooMany for broken entries.
    """
    d = Delivery(dn=entry.dn, address=address, round=rnd, status=entry.status())
    if d.status == "disabled":
        raise Disabled(entry.dn)
    if d.status == "deleted":
        raise Deleted(entry.dn)
    d.quota_size, d.quota_count, d.size_max = entry.quota(cfg)
    if d.size_max and message_size is not None and message_size > d.size_max:
        raise MaxSize(f"{message_size} > {d.size_max}")
    d.mailhost = entry.single("mailHost")
    if cfg.cluster and d.mailhost is not None and not cfg.is_me(d.mailhost):
        d.kind = "cluster"
        return d
    try:
        d.home, d.aliasempty = entry.mailstore(cfg)
    except Needed:
        return _forward_only(d, entry)
    d.user = entry.user()
    d.uid = entry.qmail_uid(cfg)
    d.gid = entry.qmail_gid(cfg)
    d.group_dn = entry.group_dn()
    d.forwards = entry.values("mailForwardingAddress")
    d.programs = entry.programs()
    d.reply_text = entry.single("mailReplyText")
    d.modes = entry.values("deliveryMode")
    d.dotmode = entry.dotmode(cfg)
    return d


def _forward_only(d, entry):
    """No mail store at all: deliver as the alias user, forwards only (ALIASDEVNULL otherwise)."""
    d.forwards = entry.values("mailForwardingAddress")
    if not d.forwards:
        raise Needed("no mail store and no mailForwardingAddress")
    d.kind = "forwardonly"
    d.user = conf.USER_ALIAS
    d.aliasempty = ALIASDEVNULL
    d.dotmode = "ldaponly"
    d.modes = [MODE_FORWARDONLY]
    return d


# -- the connection ----------------------------------------------------------

_TIMEOUTS = (ldap.TIMEOUT, ldap.TIMELIMIT_EXCEEDED, ldap.BUSY)


class _Unusable(Exception):
    """python-ldap cannot even set up a connection for this ldapserver line."""


class Directory:
    """One persistent, bound connection to the first ldapserver that answers.

    `lookup(address)` runs the qmail-lspawn rounds; `search_unique(filter)` is
    qldap_lookup; `search(filter)` returns every match. A dropped connection is
    reopened once per call (failover in ldapserver order).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self._conn = None
        self.server = None  # the ldapserver line we are connected to

    # connect / bind

    def _timeout(self):
        return self.cfg.timeout if self.cfg.timeout > 0 else -1

    def _open(self, line, version=ldap.VERSION3):
        c = ldap.initialize(server_uri(line))
        c.set_option(ldap.OPT_PROTOCOL_VERSION, version)
        c.set_option(ldap.OPT_REFERRALS, 0)
        if self.cfg.timeout > 0:
            c.set_option(ldap.OPT_NETWORK_TIMEOUT, float(self.cfg.timeout))
            c.set_option(ldap.OPT_TIMEOUT, float(self.cfg.timeout))
        c.timeout = self._timeout()  # bounds every synchronous call (bind, search)
        return c

    def _bind(self, line, binddn, password):
        """A connection to `line` bound as binddn; a server answering protocolError to the
        LDAPv3 bind gets one more try with LDAPv2 (qldap_bind)."""
        for version in (ldap.VERSION3, ldap.VERSION2):
            try:
                c = self._open(line, version)
            except ldap.LDAPError as e:
                raise _Unusable(e) from e
            try:
                c.simple_bind_s(binddn, password)
                return c
            except ldap.PROTOCOL_ERROR:
                _unbind(c)
                if version == ldap.VERSION2:
                    raise
            except BaseException:
                _unbind(c)
                raise

    def connect(self, binddn=None, password=None):
        """Bind to the first server that answers; LdapAuth on bad credentials, BindTimeout when
        none answers."""
        self.close()
        if binddn is None:
            binddn, password = self.cfg.login, self.cfg.password
        last = "no ldapserver configured"
        for line in self.cfg.servers:
            try:
                c = self._bind(line, binddn, password)
            except ldap.INVALID_CREDENTIALS as e:
                raise LdapAuth(f"{line}: {_desc(e)}") from e
            except (ldap.SERVER_DOWN, ldap.CONNECT_ERROR, *_TIMEOUTS) as e:
                last = f"{line}: {_desc(e)}"
                continue
            except _Unusable as e:  # a line python-ldap cannot parse: skip it like a dead host
                last = f"{line}: {_desc(e.__cause__)}"
                continue
            except ldap.LDAPError as e:
                raise LdapFail(f"{line}: {_desc(e)}") from e
            self._conn, self.server = c, line
            return self
        raise BindTimeout(last)

    def close(self):
        if self._conn is not None:
            _unbind(self._conn)
        self._conn = self.server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check_bind(self, dn, password):
        """ldaprebind: does `password` bind as `dn`? Uses its own connection; an empty password
        is refused (it would be an anonymous bind)."""
        if not password:
            return False
        probe = Directory(self.cfg)
        try:
            probe.connect(dn, password)
        except LdapAuth:
            return False
        finally:
            probe.close()
        return True

    # search

    def search(self, filt, attrs=None, base=None, scope=ldap.SCOPE_SUBTREE):
        """All entries matching `filt` under `base` (default ldapbasedn) as Entry objects."""
        base = self.cfg.basedn if base is None else base
        for attempt in (1, 2):
            if self._conn is None:
                self.connect()
            try:
                res = self._conn.search_ext_s(base, scope, filt, attrs, timeout=self._timeout())
                return [Entry(dn, a) for dn, a in res if dn is not None]
            except ldap.NO_SUCH_OBJECT:
                return []
            except ldap.SERVER_DOWN as e:
                self.close()  # the server went away: reconnect (failover) and retry once
                if attempt == 2:
                    raise BindTimeout(_desc(e)) from e
            except _TIMEOUTS as e:
                self.close()  # the server may be hung; do not reuse a connection mid-request
                raise SearchTimeout(_desc(e)) from e
            except ldap.FILTER_ERROR as e:
                raise LdapFail(f"bad filter {filt!r}") from e
            except ldap.LDAPError as e:
                raise LdapFail(_desc(e)) from e

    def search_unique(self, filt, attrs=None):
        """qldap_lookup: the one matching Entry, None when nothing matches, TooMany for more."""
        found = self.search(filt, attrs)
        if len(found) > 1:
            raise TooMany(f"{len(found)} entries match {filt}")
        return found[0] if found else None

    def lookup(self, address, attrs=DELIVERY_ATTRS):
        """The address lookup of qmail-lspawn: (Entry, Round) of the first round with a hit, or
        None. TooMany/SearchTimeout/LdapFail stop the rounds (lower-precedence addresses are
        never tried after an error)."""
        rounds = mail_rounds(address, self.cfg.aliasdomains, self.cfg.dash_ext)
        for rnd in rounds:
            entry = self.search_unique(address_filter(rnd.address, self.cfg.objectclass), attrs)
            if entry is not None:
                return entry, rnd
        return None

    def lookup_uid(self, uid, attrs=None):
        """The unique entry with this login uid (POP/IMAP/SMTP AUTH), or None."""
        return self.search_unique(uid_filter(uid, self.cfg.objectclass), attrs)


def _unbind(c):
    try:
        c.unbind_ext_s()
    except ldap.LDAPError:
        pass


def _desc(e):
    """The text of a python-ldap exception."""
    info = e.args[0] if e.args and isinstance(e.args[0], dict) else {}
    return info.get("desc") or str(e) or type(e).__name__
