"""Control files (qmail's control.c): ~/control/<name> read as line, list, int or raw,
and REGISTRY, the one table of every control file (qmail-showctl is generated from it).

Rules, as in qmail: "line" is the first line with trailing spaces, tabs and
newlines stripped (a carriage return is kept, as qmail keeps it); "list" is
every line so stripped, with empty lines and lines starting with '#'
dropped; "int" is a line parsed as a decimal number (its leading digits,
like scan_ulong; more than INT_MAX is an error); "ulong" is the same without
the INT_MAX bound; "raw" is the file verbatim; "cdb" is a constant database
(engine.cdb). A missing file gives the default. Files are decoded as UTF-8
with surrogateescape so 8-bit addresses survive unchanged.

One deliberate difference from qmail: an int or ulong file whose first line
does not start with a digit is a ControlError naming the file and line 1;
qmail silently used the default.
"""

import errno
import os
import sys
from dataclasses import dataclass

from engine import conf

INT_MAX = 2**31 - 1
ULONG_MAX = 2**64 - 1
_TRAILING = " \t\n"  # control.c's striptrailingwhitespace


class ControlError(Exception):
    """A control file exists but cannot be read or parsed; the message names it."""


def control_dir(home=None):
    return os.path.join(home or conf.qmailhome(), "control")


def path(name, home=None):
    return os.path.join(control_dir(home), name)


def _read_bytes(p):
    """Contents of the file `p`, or None when it does not exist; other errors are ControlError."""
    try:
        with open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ControlError(f"unable to read {p}: {os.strerror(e.errno or errno.EIO)}") from e


def _decode(data):
    return data.decode("utf-8", "surrogateescape")


def _raw(p, default):
    data = _read_bytes(p)
    return default if data is None else data


def _line(p, default):
    data = _read_bytes(p)
    if data is None:
        return default
    return _decode(data.split(b"\n", 1)[0]).rstrip(_TRAILING)


def _list(p, default):
    data = _read_bytes(p)
    if data is None:
        return default
    lines = (_decode(raw).rstrip(_TRAILING) for raw in data.split(b"\n"))
    return [line for line in lines if line and not line.startswith("#")]


def _number(p, default, limit):
    line = _line(p, None)
    if line is None:
        return default
    digits = len(line) - len(line.lstrip("0123456789"))
    if digits == 0:
        _warn_once(f"{p}: line 1: not a number: {line!r}; using the default")
        return default  # control_readint: unparsable text leaves the default
    number = int(line[:digits])
    if number > limit:
        raise ControlError(f"{p}: line 1: number too large: {line[:digits]}")
    return number


def has_number(p):
    """Whether the file's first line starts with a digit (else an int control leaves its default)."""
    line = _line(p, "")
    return line[:1] != "" and line[:1] in "0123456789"


_warned = set()


def _warn_once(text):
    """One log line per distinct complaint: listeners re-read control/ on every connection."""
    if text not in _warned:
        _warned.add(text)
        sys.stderr.write(f"warning: {text}\n")
        sys.stderr.flush()


def _int(p, default):
    return _number(p, default, INT_MAX)


def _ulong(p, default):
    return _number(p, default, ULONG_MAX)


def read_raw(name, default=None, home=None):
    """The whole file as bytes, unchanged; `default` when missing."""
    return _raw(path(name, home), default)


def read_line(name, default=None, home=None):
    """First line, trailing spaces, tabs and newline stripped; `default` when missing."""
    return _line(path(name, home), default)


def read_list(name, default=None, home=None):
    """Non-empty, non-comment lines with trailing whitespace stripped; `default` when missing."""
    return _list(path(name, home), default)


def read_file_list(p, default=None):
    """control_readfile() on a file outside control/ (users/include, users/exclude ...)."""
    return _list(p, default)


def read_int(name, default, home=None):
    """Decimal int (leading digits, like scan_ulong); `default` when missing or without a leading
    digit (logged once, as qmail silently did); above INT_MAX is an error."""
    return _int(path(name, home), default)


def read_ulong(name, default, home=None):
    """Like read_int without the INT_MAX bound (qmail's control_readulong)."""
    return _ulong(path(name, home), default)


def me(home=None):
    """control/me, or None when the host has no name configured."""
    return read_line("me", None, home)


class ConstMap:
    """qmail's constmap: a set (or key:value map) looked up ASCII-case-insensitively.

    With values=True every item is "key:value" split at its first colon and
    items without a colon are left out (constmap_init's flagcolon). Of
    duplicate keys the last one wins: constmap puts each new entry at the
    head of its hash chain and returns the first match.
    """

    __slots__ = ("_map",)

    def __init__(self, items=(), values=False, sep=":"):
        self._map = {}
        for item in items:
            if values:
                key, found, value = item.partition(sep)
                if not found:
                    continue
            else:
                key, value = item, ""
            self._map[_ascii_lower(key)] = value

    def __contains__(self, key):
        return _ascii_lower(key) in self._map

    def get(self, key, default=None):
        return self._map.get(_ascii_lower(key), default)

    def __len__(self):
        return len(self._map)


def _ascii_lower(s):
    return s.translate(_LOWER)


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# --- the registry of control files -------------------------------------------------------

TYPES = ("line", "list", "int", "ulong", "raw", "cdb")


@dataclass(frozen=True)
class Derived:
    """A default computed from other files when asked, e.g. control/me."""

    describe: str       # for documentation: where the value comes from
    resolve: object     # resolve(home) -> the default value


def from_me(literal):
    """control/me, else `literal` (control_rldef with flagme); None means no value at all."""
    return Derived(f"control/me, else {literal!r}" if literal is not None else "control/me",
                   lambda home: _me_or(home, literal))


def _me_or(home, literal):
    name = me(home)
    return literal if name is None else name


ME_LIST = Derived("control/me as its only line", lambda home: [] if me(home) is None else [me(home)])


@dataclass(frozen=True)
class Control:
    """One control file: how it is read, its default, who reads it and what it means.

    pre/post/shown are qmail-showctl's texts: a value is shown as
    pre + value + post, a missing file as "(Default.) " + shown (lists) or
    "(Default.) " + pre + shown + post (lines and numbers); shown defaults
    to the default value itself.
    """

    name: str
    type: str
    default: object
    readers: tuple
    meaning: str
    pre: str = ""
    post: str = ""
    shown: str = None
    section: str = "qmail"   # qmail-showctl block: "qmail", "ldap" (qmail-ldap specific), "pyqmail" or "users"
    source: str = None       # cdb: the text file it is built from
    dump: bool = True        # raw: whether qmail-showctl prints the contents

    def path(self, home=None):
        """control/<name>; the users/ files are registered under their "users/<name>"."""
        if self.section == "users":
            return os.path.join(home or conf.qmailhome(), self.name)
        return path(self.name, home)


SEND, TODO, SMTPD, QMTPD, REMOTE = "qmail-send", "qmail-todo", "qmail-smtpd", "qmail-qmtpd", "qmail-remote"
LSPAWN, VERIFY, INJECT, QMQPC, QUEUE = "qmail-lspawn", "qmail-verify", "qmail-inject", "qmail-qmqpc", "qmail-queue"
AUTH = ("auth_pop", "auth_imap", "auth_dovecot", "auth_smtp")
LDAP_USERS = (LSPAWN, VERIFY) + AUTH + ("qmail-group", "qmail-ldaplookup")
PBS = ("pbsadd", "pbscheck", "pbsdbd")

def _listener_controls(service, program):
    """control/<service>listen, workers, concurrency, perip, rules and rules.cdb of one listener."""
    master = ("qmail-start",)
    return (
        Control(f"{service}listen", "list", [], master,
                f"addresses ip:port ([ipv6]:port) the master binds for {program}; none = no {service} listener",
                pre=f"{program} listens on ", post=".", shown=f"No {service} listener.", section="pyqmail"),
        Control(f"{service}workers", "int", 2, master, f"preforked {program} workers (at most 64)",
                pre=f"{program} workers: ", section="pyqmail"),
        Control(f"{service}concurrency", "int", 40, master,
                f"simultaneous {service} connections in all (tcpserver -c)",
                pre=f"{program} connection limit is ", section="pyqmail"),
        Control(f"{service}perip", "int", 0, master, f"simultaneous {service} connections per client; 0 = no limit",
                pre=f"{program} connections per client: ", post=" (0 is unlimited)", section="pyqmail"),
        Control(f"{service}rules", "raw", None, master,
                f"tcprules for {program} connections, compiled to {service}rules.cdb when newer",
                shown="No rules: every client is allowed.", section="pyqmail", dump=False),
        Control(f"{service}rules.cdb", "cdb", None, master, f"compiled {service}rules (tcprules format)",
                source=f"{service}rules", shown="No effect.", section="pyqmail"),
    )


REGISTRY = {c.name: c for c in (
    # -- stock qmail (and qmail-ldap additions qmail-showctl lists among them), in qmail-showctl's order
    Control("goodmailfrom", "list", [], (SMTPD,),
            "MAIL FROM addresses (full, @domain, user@) that skip badmailfrom, RBL and sender checks",
            post=" bypasses additional checks in MAIL FROM.", shown="No MAIL FROM will bypass additional checks."),
    Control("badmailfrom", "list", [], (SMTPD,),
            "MAIL FROM addresses rejected with 553: full address, @domain or user@",
            post=" not accepted in MAIL FROM.", shown="Any MAIL FROM is allowed."),
    Control("badmailfrom-unknown", "list", [], (SMTPD,),
            "like badmailfrom, applied only to clients without a PTR name (TCPREMOTEHOST unset or unknown)",
            post=" not accepted in MAIL FROM from host without PTR.",
            shown="Any MAIL FROM from hosts without PTR is allowed."),
    Control("badrcptto", "list", [], (SMTPD,), "recipients rejected with 553: full address, @domain or user@",
            post=" not accepted in RCPT TO", shown="Any RCPT TO is allowed."),
    Control("bigbrother", "list", [], (QUEUE,),
            "address:copyto or @domain:copyto; mail from or to the address is also sent to copyto",
            pre="Observed mail address: ", shown="No mail addresses are observed."),
    Control("bouncefrom", "line", "MAILER-DAEMON", (SEND,), "local part of the From: of bounces",
            pre="Bounce user name is "),
    Control("bouncehost", "line", from_me("bouncehost"), (SEND,),
            "host part of the From: of bounces", pre="Bounce host name is "),
    Control("bouncemaxbytes", "int", 0, (SEND,),
            "at most this many bytes of the original message go into a bounce; 0 = all",
            pre="Bounce data limit is ", post=" bytes"),
    Control("concurrencylocal", "int", 10, (SEND,),
            "parallel local deliveries, at most conf-spawn; 0 holds local deliveries",
            pre="Local concurrency is "),
    Control("concurrencyremote", "int", 20, (SEND,),
            "parallel remote deliveries, at most conf-spawn", pre="Remote concurrency is "),
    Control("custombouncetext", "raw", None, (SEND,),
            "text put into every bounce after the standard introduction; no blank lines",
            shown="No custombouncetext."),
    Control("databytes", "ulong", 0, (SMTPD, QMTPD),
            "largest message accepted in bytes, 0 = no limit; $DATABYTES overrides",
            pre="SMTP DATA limit is ", post=" bytes"),
    Control("defaultdomain", "line", from_me("defaultdomain"), (INJECT,),
            "domain added to a host name without a dot", pre="Default domain name is "),
    Control("defaulthost", "line", from_me("defaulthost"), (INJECT,),
            "host added to addresses without one", pre="Default host name is "),
    Control("defaultdelivery", "raw", None, ("qmail-start run script",),
            "default delivery instruction for users without .qmail (qmail-start's argument); "
            "./Maildir/ when neither this nor aliasempty exists",
            shown="./Maildir/ (unless aliasempty exists)."),
    Control("aliasempty", "raw", None, ("qmail-start run script",),
            "older name of defaultdelivery, used when defaultdelivery is missing",
            shown="./Maildir/ (unless defaultdelivery exists)."),
    Control("dirmaker", "line", None, (LSPAWN,) + AUTH,
            "program run as the user to create a missing home directory (argv: home aliasempty)",
            pre="Program to create homedirs ", shown="not defined"),
    Control("doublebouncehost", "line", from_me("doublebouncehost"), (SEND,),
            "host part of the double-bounce recipient", pre="2B recipient host: "),
    Control("doublebounceto", "line", "postmaster", (SEND,),
            "user part of the double-bounce recipient", pre="2B recipient user: "),
    Control("envnoathost", "line", from_me("envnoathost"), (SEND, TODO),
            "domain added to envelope recipients without @", pre="Presumed domain name is "),
    Control("goodmailaddr", "list", [], (SMTPD,),
            "addresses always accepted by RCPTCHECK/SENDERCHECK: full, @domain, user@, catchall@domain",
            post=" is allowed in any case.", shown="No good mail addresses."),
    Control("helohost", "line", from_me(None), (REMOTE,), "host name qmail-remote sends in HELO/EHLO",
            pre="SMTP client HELO host name is ", shown="helohost"),
    Control("idhost", "line", from_me("idhost"), (INJECT,), "host part of new Message-IDs",
            pre="Message-ID host name is "),
    Control("localiphost", "line", from_me(None), (SMTPD,),
            "name that replaces the domain literal [my.ip] in envelope addresses",
            pre="Local IP address becomes ", shown="localiphost"),
    Control("locals", "list", ME_LIST, (SEND, TODO, SMTPD, QMTPD),
            "domains delivered locally (and accepted by SMTP unless NOLOCAL); ignored when locals.cdb exists",
            pre="Messages for ", post=" are delivered locally.", shown="Messages for me are delivered locally."),
    Control("locals.cdb", "cdb", None, (SEND, TODO, SMTPD, QMTPD),
            "replaces locals (lower-case keys, built by qmail-cdb); read per look-up, no HUP needed",
            source="locals", shown="No effect; locals is used."),
    Control("me", "line", None, ("every program",),
            "this host's name; the default of the me-derived files; required by qmail-smtpd",
            pre="My name is ", shown="undefined! Uh-oh"),
    Control("outgoingip", "line", "0.0.0.0", (REMOTE,), "source IPv4 address of outgoing SMTP connections",
            pre="Bind qmail-remote to "),
    Control("pbscachesize", "ulong", 1048576, ("pbsdbd",), "bytes of POP-before-SMTP cache",
            pre="PBS cachesize is ", post=" bytes"),
    Control("pbsenv", "list", [], ("pbsadd", "pbscheck"),
            "environment carried from POP/IMAP login to SMTP: NAME, NAME=NEWNAME or NAME=NEWNAME=prefix",
            pre="Environment Variable: ", shown="No environment variables will be passed."),
    Control("pbsip", "line", "0.0.0.0", ("pbsdbd",), "address pbsdbd binds to", pre="Bind PBS daemon to "),
    Control("pbsport", "int", 2821, PBS, "UDP port of pbsdbd (at most 65000)",
            pre="PBS deamon listens on port "),
    Control("pbssecret", "line", None, ("pbsadd", "pbsdbd"),
            "shared secret of POP-before-SMTP add packets (at most 255 characters); required",
            pre="PBS shared secret is ", shown="undefined! Uh-oh"),
    Control("pbsservers", "list", None, ("pbsadd", "pbscheck"), "IPv4 addresses of the pbsdbd servers; required",
            pre="PBS server ", post=".", shown="No PBS servers."),
    Control("pbstimeout", "int", 600, ("pbsdbd",), "seconds a POP-before-SMTP entry stays valid",
            pre="PBS entries will be valid for ", post=" seconds"),
    Control("percenthack", "list", [], (SEND, TODO), "domains where user%host@domain becomes user@host",
            pre="The percent hack is allowed for user%host@", post=".",
            shown="The percent hack is not allowed."),
    Control("plusdomain", "line", from_me("plusdomain"), (INJECT,), "domain that replaces a trailing +",
            pre="Plus domain name is "),
    Control("qmqpcip", "line", "0.0.0.0", (QMQPC,), "source address of QMQP connections",
            pre="Bind qmail-qmqpc to "),
    Control("qmqpservers", "list", [], (QMQPC,), "QMQP servers (IP addresses), tried in order",
            pre="QMQP server: ", post=".", shown="No QMQP servers."),
    Control("queuelifetime", "int", 604800, (SEND,),
            "seconds after which a temporary delivery failure becomes permanent",
            pre="Message lifetime in the queue is ", post=" seconds"),
    Control("quotawarning", "raw", None, ("qmail-quotawarn",),
            "text of the quota warning (may start with headers; %HEADER% supported); none = no warnings",
            shown="No quotawarning."),
    Control("rbllist", "list", [], (SMTPD,), "DNSBLs checked when $RBL is set: basedomain action matchon message",
            pre="RBL to check: ", post=".", shown="No RBL listed."),
    Control("rcpthosts", "list", [], (SMTPD, QMTPD),
            "domains (host or .suffix) SMTP accepts mail for besides locals; missing is not an open relay",
            pre="SMTP clients may send messages to recipients at ", post=".",
            shown="SMTP clients may send messages only to locals (and relay with RELAYCLIENT)."),
    Control("rcpthosts.cdb", "cdb", None, (SMTPD, QMTPD),
            "replaces rcpthosts and morercpthosts.cdb (same host and .suffix keys, built by qmail-cdb)",
            source="rcpthosts", shown="No effect; rcpthosts is used."),
    Control("morercpthosts", "list", [], ("qmail-newmrh",), "source of morercpthosts.cdb (qmail-newmrh)",
            pre="SMTP clients may send messages to recipients at ", post=".", shown="No effect."),
    Control("morercpthosts.cdb", "cdb", None, (SMTPD, QMTPD),
            "more rcpthosts, built by qmail-newmrh; ignored when rcpthosts.cdb exists",
            source="morercpthosts", shown="No effect."),
    Control("relaymailfrom", "list", [], (SMTPD,), "envelope senders (full or @domain) allowed to relay",
            pre="Envelope senders allowed to relay: ", post=".", shown="Relaymailfrom not enabled."),
    Control("remotecert", "line", None, (REMOTE,), "PEM file with the client certificate and key for STARTTLS",
            pre="qmail-remote TLS client certificate is ", shown="none"),
    Control("signatures", "list", [], (SMTPD,),
            "attachment signatures rejected when $REJECTEXEC is set ('*' matches any one character)",
            pre="Rejected attachment signature: ", shown="No attachment signatures."),
    Control("smtpcert", "line", None, (SMTPD,),
            "PEM file (relative to the qmail home) with certificate and key; none = no STARTTLS; $SSLCERT overrides",
            pre="SMTP server certificate is ", shown="none, STARTTLS is off"),
    Control("smtpclustercookie", "line", None, (SMTPD, REMOTE),
            "cookie (32 characters) at the end of the greeting; qmail-remote refuses to loop back to it",
            pre="SMTP cluster cookie is ", shown="none"),
    Control("smtpgreeting", "line", "", (SMTPD,), "text after '220 <me> ESMTP ' in the greeting",
            pre="SMTP greeting: 220 {me} ESMTP "),
    Control("smtproutes", "list", [], (REMOTE,),
            "static routes domain:relay[:port][ user password]; empty relay = MX; user/password = AUTH LOGIN",
            pre="SMTP route: ", shown="No artificial SMTP routes."),
    Control("timeoutconnect", "int", 60, (REMOTE, QMQPC), "seconds to wait for a TCP connection",
            pre="SMTP client connection timeout is ", post=" seconds"),
    Control("timeoutremote", "int", 120, (REMOTE,), "seconds qmail-remote waits for the remote server",
            pre="SMTP client data timeout is ", post=" seconds"),
    Control("timeoutsmtpd", "int", 120, (SMTPD,), "seconds qmail-smtpd waits for the client; values <= 0 become 1",
            pre="SMTP server data timeout is ", post=" seconds"),
    Control("tlsciphers", "line", "compat", (SMTPD,), "libtls cipher list of qmail-smtpd",
            pre="SMTP server TLS ciphers are "),
    Control("tlsdheparams", "line", "none", (SMTPD, REMOTE), "DHE parameters: none, auto or legacy",
            pre="TLS DHE parameters are "),
    Control("tlsremoteciphers", "line", "compat", (REMOTE,), "libtls cipher list of qmail-remote",
            pre="SMTP client TLS ciphers are "),
    Control("virtualdomains", "list", [], (SEND, TODO),
            "domain:prepend, user@domain:prepend or .suffix:prepend; delivered locally as prepend-local",
            pre="Virtual domain: ", shown="No virtual domains."),
    Control("Makefile", "raw", None, ("make",), "rebuilds locals.cdb and rcpthosts.cdb with qmail-cdb",
            shown="No Makefile.", dump=False),

    # -- qmail-ldap specific, in qmail-showctl's order
    Control("ldapbasedn", "line", "", LDAP_USERS, "search base (subtree) of the user look-ups",
            pre="LDAP basedn: ", shown="NULL", section="ldap"),
    Control("ldapserver", "list", None, LDAP_USERS,
            "LDAP servers (host or host:port, default port 389), tried in order; required", shown="undefined! Uh-oh",
            section="ldap"),
    Control("ldaplogin", "line", "", LDAP_USERS, "bind DN; empty = anonymous", pre="LDAP login: ", shown="NULL",
            section="ldap"),
    Control("ldappassword", "line", "", LDAP_USERS, "bind password", pre="LDAP password: ", shown="NULL",
            section="ldap"),
    Control("ldapgrouplogin", "line", Derived("ldaplogin", lambda home: value("ldaplogin", home)),
            ("qmail-group",), "bind DN for mail-group expansion", pre="LDAP group login: ",
            shown="NULL (as ldaplogin)", section="ldap"),
    Control("ldapgrouppassword", "line",
            Derived("ldappassword without ldapgrouplogin, else empty", lambda home: _group_password(home)),
            ("qmail-group",), "bind password for mail-group expansion", pre="LDAP group password: ",
            shown="NULL (as ldappassword)", section="ldap"),
    Control("ldaptimeout", "int", 30, LDAP_USERS, "seconds per LDAP search before a temporary failure",
            pre="LDAP server timeout is ", post=" seconds", section="ldap"),
    Control("ldapuid", "int", 0, LDAP_USERS, "qmailUID for entries without one; 0 = none",
            pre="Default UID is ", shown="not defined", section="ldap"),
    Control("ldapgid", "int", 0, LDAP_USERS, "qmailGID for entries without one; 0 = none",
            pre="Default GID is ", shown="not defined", section="ldap"),
    Control("ldapobjectclass", "line", "", LDAP_USERS,
            "if set, every user filter becomes (&(objectClass=<value>)<filter>)",
            pre="The objectclass to limit ldap filter is ", shown="not defined", section="ldap"),
    Control("ldapmessagestore", "line", "", LDAP_USERS, "prefix of relative mailMessageStore paths",
            pre="Prefix for non absolute paths is ", shown="not defined", section="ldap"),
    Control("ldapdefaultdotmode", "line", "ldaponly", (LSPAWN,), "qmailDotMode of entries without one",
            pre="Default dot mode for ldap users is ", section="ldap"),
    Control("defaultquotasize", "ulong", 0, (LSPAWN,) + AUTH, "Maildir++ size quota in bytes; 0 = unlimited",
            pre="Mailbox size quota is ", post=" bytes (0 is unlimited)", section="ldap"),
    Control("defaultquotacount", "ulong", 0, (LSPAWN,) + AUTH, "Maildir++ message-count quota; 0 = unlimited",
            pre="Mailbox count quota is ", post=" messages (0 is unlimited)", section="ldap"),
    Control("ldaplocaldelivery", "int", 1, (LSPAWN, VERIFY, "auth_pop", "auth_imap", "auth_dovecot"),
            "1 = addresses not in LDAP fall back to users/cdb and passwd; 0 = to the alias user",
            pre="Local passwd lookup is ", post=" (1 = on, 0 = off)", section="ldap"),
    Control("ldaprebind", "int", 0, AUTH + ("qmail-ldaplookup",),
            "1 = check passwords by binding as the user instead of comparing userPassword",
            pre="Ldap rebinding is ", post=" (1 = on, 0 = off)", section="ldap"),
    Control("ldapcluster", "int", 0, (LSPAWN,) + AUTH, "1 = forward mail and POP/IMAP to the user's mailHost",
            pre="Clustering is ", post=" (1 = on, 0 = off)", section="ldap"),
    Control("ldapclusterhosts", "list", [], (LSPAWN,) + AUTH, "more names that count as this host for mailHost",
            pre="Messages for ", post=" are not redirected.", shown="Messages for me are not redirected.",
            section="ldap"),
    Control("aliasdomains", "list", [], (LSPAWN, VERIFY, "qmail-group", "qmail-ldaplookup"),
            "alias.domain:real.domain; the real domain is used in LDAP look-ups",
            pre="LDAP alias domain: ", shown="No LDAP alias domains.", section="ldap"),

    # -- pyqmail-ldap's own: the master's listeners, which take tcpserver's role (engine.tcpserver)
    *(c for service, program in (("smtp", SMTPD), ("qmtp", QMTPD)) for c in _listener_controls(service, program)),
    *_listener_controls("pop3", "qmail-popup"),  # engine.pop3pool: qmail-popup + auth_pop + qmail-pop3d
    Control("smtpdataz", "int", 0, (SMTPD,), "1 = advertise and accept DATAZ (qmail-ldap's DATA_COMPRESS build option)",
            pre="DATAZ compression: ", post=" (1 is on)", section="pyqmail"),
    Control("ldapdupealias", "int", 0, (LSPAWN, VERIFY),
            "1 = an address with several LDAP entries goes to the passwd user dupealias (qmail-ldap's DUPEALIAS "
            "build option) instead of bouncing", pre="Duplicate LDAP entries go to dupealias: ", post=" (1 is on)",
            section="pyqmail"),

    # -- ~/users
    Control("users/assign", "raw", None, ("qmail-newu",),
            "user assignments (=local:... exact, +prefix:... wildcard), ending with a '.' line",
            shown="No user assignments.", section="users", dump=False),
    Control("users/cdb", "cdb", None, (LSPAWN, VERIFY), "compiled users/assign (qmail-newu)",
            source="users/assign", shown="No effect.", section="users"),
    Control("users/include", "list", [], ("qmail-pw2u",), "only these passwd users are listed by qmail-pw2u",
            pre="Included user: ", shown="All users are included.", section="users"),
    Control("users/exclude", "list", [], ("qmail-pw2u",), "passwd users qmail-pw2u leaves out",
            pre="Excluded user: ", shown="No users are excluded.", section="users"),
    Control("users/mailnames", "list", [], ("qmail-pw2u",), "user:mailname pairs: the address qmail-pw2u gives a user",
            pre="Mail name: ", shown="Users get mail at their login names.", section="users"),
)}

# qmail-ldap control files that nothing reads any more (qmail-showctl asks to remove them)
OBSOLETE = ("ldapusername", "ldappasswdappend", "ldapdefaultquota", "rblonlyheader",
            "maxrcptcount", "tarpitdelay", "tarpitcount")

_READERS = {"line": _line, "list": _list, "int": _int, "ulong": _ulong, "raw": _raw}


def _group_password(home):
    if os.path.exists(REGISTRY["ldapgrouplogin"].path(home)):
        return ""
    return value("ldappassword", home)


def default(name, home=None):
    """The registry default of `name`, with derived defaults (control/me ...) resolved."""
    d = REGISTRY[name].default
    if isinstance(d, Derived):
        return d.resolve(home)
    return list(d) if isinstance(d, list) else d


def value(name, home=None):
    """The value of a registered file read by its type, or its default when missing.

    A cdb gives its path when it exists, else None. ControlError when the file cannot be read or parsed.
    """
    entry = REGISTRY[name]
    if entry.type == "cdb":
        p = entry.path(home)
        return p if os.path.exists(p) else None
    found = _READERS[entry.type](entry.path(home), None)
    return default(name, home) if found is None else found
