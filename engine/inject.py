"""qmail-inject: preprocess a mail message and send it (qmail-inject(8), qmail-header(5)).

    qmail-inject [ -nNaAhH ] [ -fsender ] [ recip ... ]

Reads a message on stdin, fixes its header and hands it to qmail-queue
(engine.qq): adds Date, Message-ID, From (or their Resent- forms for a
resent message) and "Cc: recipient list not shown: ;" when needed;
rewrites the addresses of sender and recipient fields (defaulthost for an
address without '@', defaultdomain for a host without a dot, plusdomain
for a host ending in '+', source routes stripped); drops Bcc, Resent-Bcc,
Return-Path and Content-Length. Recipients are the arguments, or the
header's To/Cc/Bcc/Apparently-To (Resent-To/Cc/Bcc for a resent message)
when there are none (-a/-h/-A/-H choose). -n prints the message instead
of queueing it.

Environment: QMAILUSER, MAILUSER, USER, LOGNAME (user in From);
QMAILHOST, MAILHOST (its host); QMAILNAME, MAILNAME, NAME (its personal
name); QMAILSUSER, QMAILSHOST (envelope sender); QMAILINJECT letters c
(address-comment From), s (ignore Return-Path), f (delete From), i (delete
Message-ID), r (per-recipient VERP), m (per-message VERP); QMAILMFTFILE
(mailing lists that get a Mail-Followup-To); QMAILDEFAULTDOMAIN,
QMAILDEFAULTHOST, QMAILPLUSDOMAIN, QMAILIDHOST override the control files
defaultdomain, defaulthost, plusdomain, idhost (each defaulting to
control/me). Exits 0, 100 for bad usage or a bad header, 111 for
temporary trouble.

One difference from qmail-ldap: a message that would be queued with no
recipient at all is refused ("no recipients", exit 100) instead of being
queued and silently discarded.
"""

import os
import sys
import time

from engine import conf, control, hfield, newfield, qq
from engine.quote import quote2, quote_need
from engine import token822 as tk
from engine.sgetopt import getopt

LINELEN = 80
PROG = "qmail-inject"

RECIP_DEFAULT, RECIP_ARGS, RECIP_HEADER, RECIP_AH = range(4)

# header fields whose address lists are rewritten, and what is collected from them
_TOCC = (hfield.TO, hfield.CC)
_HEADER_RECIPS = (hfield.BCC, hfield.APPARENTLYTO)
_RESENT_RECIPS = (hfield.R_TO, hfield.R_CC, hfield.R_BCC)
_SENDERS = (hfield.SENDER, hfield.FROM, hfield.REPLYTO, hfield.RETURNRECEIPTTO, hfield.ERRORSTO,
            hfield.R_SENDER, hfield.R_FROM, hfield.R_REPLYTO)
_DROPPED = (hfield.BCC, hfield.R_BCC, hfield.RETURNPATH, hfield.CONTENTLENGTH)
_RESENT = (hfield.R_SENDER, hfield.R_FROM, hfield.R_REPLYTO, hfield.R_TO, hfield.R_CC,
           hfield.R_BCC, hfield.R_DATE, hfield.R_MESSAGEID)


class Fatal(Exception):
    """Ends qmail-inject: `text` goes to stderr after "qmail-inject: fatal: ", exit `code`."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


def perm(text):
    return Fatal(100, text)


def temp(text):
    return Fatal(111, text)


def unable_to_parse(line):
    return perm(b"unable to parse this line:\n" + line)


class Options:
    """What the environment and QMAILINJECT say, read once at start (qmail-inject.c main)."""

    def __init__(self, environ):
        get = environ.get
        letters = get(b"QMAILINJECT", b"")
        self.name_comment = b"c" in letters
        self.delete_sender = b"s" in letters
        self.delete_from = b"f" in letters
        self.delete_messid = b"i" in letters
        self.verp_recip = b"r" in letters
        self.verp_mess = b"m" in letters
        self.mailhost = _first(get, b"QMAILHOST", b"MAILHOST")
        self.mailrhost = _first(get, b"QMAILSHOST") or self.mailhost
        self.mailuser = _first(get, b"QMAILUSER", b"MAILUSER", b"USER", b"LOGNAME") or b"anonymous"
        self.mailruser = _first(get, b"QMAILSUSER") or self.mailuser
        self.fullname = _first(get, b"QMAILNAME", b"MAILNAME", b"NAME")
        self.mftfile = get(b"QMAILMFTFILE")
        self.overrides = {name: get(b"QMAIL" + name.upper().encode()) for name in
                          ("defaultdomain", "defaulthost", "plusdomain", "idhost")}


def _first(get, *names):
    for name in names:
        value = get(name)
        if value is not None:
            return value
    return None


class Controls:
    """defaultdomain, defaulthost, plusdomain, idhost: env, else control file, else me, else the literal name."""

    def __init__(self, opts, home):
        try:
            me = control.me(home)
            values = {name: opts.overrides[name] if opts.overrides[name] is not None
                      else self._read(name, me, home) for name in opts.overrides}
        except control.ControlError as e:
            raise temp(b"read error\n") from e
        self.idhost = values["idhost"]
        self.defaultdomain = self._tokens(b"." + values["defaultdomain"])
        self.defaulthost = self._tokens(b"@" + values["defaulthost"])
        self.plusdomain = self._tokens(b"." + values["plusdomain"])

    @staticmethod
    def _read(name, me, home):
        value = control.read_line(name, None, home)
        if value is None:
            value = me if me is not None else name
        return os.fsencode(value)

    @staticmethod
    def _tokens(text):
        try:
            return tk.parse(text)
        except tk.ParseError:
            raise unable_to_parse(text) from None


class Rewriter:
    """qmail-inject.c rwgeneric and friends, on reversed address tokens (rightmost first)."""

    def __init__(self, controls):
        self.c = controls

    def generic(self, addr):
        if not addr:
            return  # <> stays <>
        if len(addr) >= 2 and addr[1][0] == tk.AT and addr[0] == (tk.LITERAL, b""):
            return  # <foo@[]> is left alone
        self._route(addr)
        for step in (self._extradot, self._extraat):
            if not addr:
                return
            step(addr)
        if not addr:
            return
        self._noat(addr)
        self._plus(addr)
        self._nodot(addr)

    @staticmethod
    def _route(addr):
        """<@a,@b:user@host> -> <user@host>."""
        if addr[-1][0] == tk.AT:
            while addr:
                if addr.pop()[0] == tk.COLON:
                    return

    @staticmethod
    def _extradot(addr):
        if addr[0][0] == tk.DOT:
            del addr[0]

    @staticmethod
    def _extraat(addr):
        if addr[0][0] == tk.AT:
            del addr[0]

    def _noat(self, addr):
        if not any(kind == tk.AT for kind, _ in addr):
            addr[0:0] = reversed(self.c.defaulthost)

    def _plus(self, addr):
        kind, text = addr[0]
        if kind != tk.ATOM or not text.endswith(b"+"):
            return
        addr[0] = (kind, text[:-1])
        addr[0:0] = reversed(self.c.plusdomain)

    def _nodot(self, addr):
        host = []
        for token in addr:
            if token[0] == tk.AT:
                break
            host.append(token[0])
        if tk.DOT in host or tk.LITERAL in host:
            return
        addr[0:0] = reversed(self.c.defaultdomain)


def envelope_address(addr):
    """The envelope form of a reversed token list."""
    return tk.unquote(addr[::-1])


class Inject:
    """One run of qmail-inject: header processing state and output."""

    def __init__(self, opts, controls, mft, stdout, env):
        self.opts = opts
        self.controls = controls
        self.rw = Rewriter(controls)
        self.mft = mft
        self.stdout = stdout
        self.env = env
        self.starttime = int(time.time())
        self.sender = None
        self.queue = True
        self.flagrh = False
        self.flagresent = False
        self.seen = set()
        self.saved = []
        self.reciplist = []
        self.hrlist = []
        self.hrrlist = []
        self.tocclist = []
        self.qq = None

    def put(self, data):
        if self.qq is not None:
            self.qq.put(data)
        elif not self.queue:
            self.stdout.write(data)

    # -- addresses ----------------------------------------------------------
    def set_sender_option(self, arg):
        """-f: the envelope sender, rewritten like any address."""
        quoted = quote2(arg)
        try:
            addr = tk.parse(quoted)
        except tk.ParseError:
            raise unable_to_parse(quoted) from None
        addr.reverse()
        self.rw.generic(addr)
        self.sender = envelope_address(addr)

    def add_recipient(self, arg):
        try:
            addr = tk.parse(quote2(arg))
        except tk.ParseError:
            raise perm(b"unable to parse address: " + arg + b"\n") from None
        addr.reverse()
        self.rw.generic(addr)
        self.reciplist.append(envelope_address(addr))

    def _rw_return(self, addr):
        """Return-Path: the first address becomes the envelope sender unless -f gave one."""
        self.rw.generic(addr)
        if self.sender is None:
            self.sender = envelope_address(addr)
            if self.opts.verp_recip:
                self.sender += b"-@[]"

    def _rw_collect(self, *lists):
        def rewrite(addr):
            self.rw.generic(addr)
            for target in lists:
                target.append(envelope_address(addr))
        return rewrite

    def _callback(self, htype):
        if htype in _TOCC:
            return self._rw_collect(self.hrlist, self.tocclist)
        if htype in _HEADER_RECIPS:
            return self._rw_collect(self.hrlist)
        if htype in _RESENT_RECIPS:
            return self._rw_collect(self.hrrlist)
        if htype == hfield.RETURNPATH:
            return self._rw_return
        if htype in _SENDERS:
            return self.rw.generic
        return None

    # -- header -------------------------------------------------------------
    def _deleted(self, htype):
        o = self.opts
        return ((o.delete_from and htype == hfield.FROM)
                or (o.delete_messid and htype == hfield.MESSAGEID)
                or (o.delete_sender and htype == hfield.RETURNPATH))

    def field(self, line):
        htype = hfield.known(line)
        if self._deleted(htype):
            return
        if htype:
            self.seen.add(htype)
        elif not hfield.valid(line):
            raise perm(b"invalid header field: " + line)
        callback = self._callback(htype)
        if callback is not None:
            line = rewrite_field(line, callback)
        if htype not in _DROPPED:
            self.saved.append(line)

    def _default_from(self):
        """From: (or its Resent- form) for the invoking user, rewritten like a header From."""
        o = self.opts
        toks = [(tk.ATOM, b"From"), (tk.COLON, b"")]
        named = o.fullname is not None and not o.name_comment
        if named:
            toks += [(tk.QUOTE, o.fullname), (tk.LEFT, b"")]
        toks.append((tk.QUOTE if quote_need(o.mailuser) else tk.ATOM, o.mailuser))
        if o.mailhost is not None:
            toks += [(tk.AT, b""), (tk.ATOM, o.mailhost)]
        if named:
            toks.append((tk.RIGHT, b""))
        if o.fullname is not None and o.name_comment:
            toks.append((tk.COMMENT, o.fullname))
        return rewrite_field(tk.unparse(toks, LINELEN), self.rw.generic)

    def _default_return_path(self):
        """The envelope sender from QMAILSUSER/QMAILSHOST (else the From user), with the VERP letters."""
        o = self.opts
        user = o.mailruser
        if o.verp_mess:
            user += b"-%d.%d" % (self.starttime, os.getpid())
        if o.verp_recip:
            user += b"-"
        toks = [(tk.ATOM, b"Return-Path"), (tk.COLON, b""), (tk.QUOTE, user)]
        if o.mailrhost is not None:
            toks += [(tk.AT, b""), (tk.ATOM, o.mailrhost)]
        rewrite_field(tk.unparse(toks, LINELEN), self._rw_return)

    def _date(self):
        return newfield.date_field(self.starttime)

    def _msgid(self):
        return newfield.msgid_field(self.controls.idhost, self.starttime)

    def envelope_recipients(self):
        recips = list(self.reciplist)
        if self.flagrh:
            recips += self.hrrlist if self.flagresent else self.hrlist
        return recips

    def header_done(self):
        """qmail-inject.c finishheader: sender, queue start, the added fields, then the saved ones."""
        self.flagresent = any(h in self.seen for h in _RESENT)
        if self.sender is None:
            self._default_return_path()
        if not self.queue:
            self.put(b"Return-Path: <" + quote2(self.sender) + b">\n")
        else:
            if not self.envelope_recipients():
                raise perm(b"no recipients\n")
            try:
                self.qq = qq.Queue(self.env)
            except OSError:
                raise temp(b"unable to run qmail-queue\n") from None
        if self.flagresent:
            self._stamp(b"Resent-", hfield.R_DATE, hfield.R_MESSAGEID, hfield.R_FROM,
                        (hfield.R_TO, hfield.R_CC))
        else:
            self._stamp(b"", hfield.DATE, hfield.MESSAGEID, hfield.FROM, (hfield.TO, hfield.CC))
            self._mail_followup_to()
        for line in self.saved:
            self.put(line)

    def _stamp(self, prefix, date, msgid, from_, tocc):
        if date not in self.seen:
            self.put(prefix + self._date())
        if msgid not in self.seen:
            self.put(prefix + self._msgid())
        if from_ not in self.seen:
            self.put(prefix + self._default_from())
        if not any(h in self.seen for h in tocc):
            self.put(prefix + b"Cc: recipient list not shown: ;\n")

    def _mail_followup_to(self):
        """QMAILMFTFILE: To+Cc naming a listed mailing list gets Mail-Followup-To with all of To+Cc."""
        if not self.mft or hfield.MAILFOLLOWUPTO in self.seen:
            return
        if not any(addr.lower() in self.mft for addr in self.tocclist):
            return
        quoted = [quote2(addr) for addr in reversed(self.tocclist)]
        self.put(b"Mail-Followup-To: " + b",\n  ".join(quoted) + b"\n")

    def finish(self):
        """exitnicely: the envelope and the queue program's answer."""
        if not self.queue:
            self.stdout.flush()
            return
        self.qq.sender(self.sender)
        for rcpt in self.envelope_recipients():
            self.qq.to(rcpt)
        result = self.qq.close()
        if result:
            text = os.fsencode(result[1:]) + b"\n"
            raise perm(text) if result.startswith("D") else temp(text)

    def abandon(self):
        """A fatal error after the queue program started: it queues nothing and is reaped."""
        if self.qq is not None and not self.qq.closed:
            self.qq.fail()
            self.qq.close()


def rewrite_field(line, callback):
    """A header field with every address passed through `callback`, refolded."""
    try:
        return tk.unparse(tk.addrlist(tk.parse(line), callback), LINELEN)
    except tk.ParseError:
        raise unable_to_parse(line) from None


def read_mft(environ):
    """QMAILMFTFILE's mailing-list addresses, lower-cased (read before anything else, as qmail does)."""
    name = environ.get(b"QMAILMFTFILE")
    if name is None:
        return None
    try:
        # read_list joins the control directory with an absolute path as that path
        lists = control.read_list(os.path.abspath(os.fsdecode(name)), None)
    except control.ControlError:
        raise temp(b"read error\n") from None
    return {os.fsencode(x).lower() for x in lists} if lists else None


def parse_args(run, argv):
    """-aAhHnNf and the recipient arguments (qmail-inject.c main)."""
    strategy = RECIP_DEFAULT
    opts = getopt(argv, b"aAhHnNf:", PROG)
    for opt, arg in opts:
        if opt == b"f":
            run.set_sender_option(arg)
        elif opt in _STRATEGY:
            strategy = _STRATEGY[opt]
        elif opt in (b"n", b"N"):
            run.queue = opt == b"N"
        else:
            raise Fatal(100, None)  # sgetopt has said what is wrong
    args = opts.rest()
    if strategy == RECIP_DEFAULT:
        strategy = RECIP_ARGS if args else RECIP_HEADER
    if strategy != RECIP_HEADER:
        for arg in args:
            run.add_recipient(arg)
    run.flagrh = strategy != RECIP_ARGS


_STRATEGY = {b"a": RECIP_ARGS, b"A": RECIP_DEFAULT, b"h": RECIP_HEADER, b"H": RECIP_AH}


def inject(argv, stdin, stdout, environ=None):
    """Run qmail-inject on binary streams; returns the exit code (errors already on stderr)."""
    environ = os.environb if environ is None else environ
    env = {os.fsdecode(k): os.fsdecode(v) for k, v in environ.items()}
    run = None
    try:
        opts = Options(environ)
        mft = read_mft(environ)
        home = env.get("QMAILHOME") or conf.qmailhome()
        if not os.path.isdir(home):
            raise temp(b"internal bug\n")
        run = Inject(opts, Controls(opts, home), mft, stdout, env)
        parse_args(run, argv)
        hfield.headerbody(stdin, run.field, run.header_done, run.put)
        run.finish()
    except Fatal as e:
        if run is not None:
            run.abandon()
        if e.text is not None:
            _complain(e.text)
        return e.code
    except OSError:
        if run is not None:
            run.abandon()
        _complain(b"read error\n")
        return 111
    return 0


def _complain(text):
    err = sys.stderr.buffer
    err.write(b"qmail-inject: fatal: " + text)
    err.flush()


def main(argv=None):
    argv = [os.fsencode(a) for a in (sys.argv if argv is None else argv)]
    return inject(argv, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
