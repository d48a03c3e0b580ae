"""What an SMTP session needs from the rest of the system, in one place (engine.smtpd's `services`).

submit: the queue — in-process through engine.queue (qmail-queue's steps
and durability, no process spawned) or, when $QMAILQUEUE is set, through
that program (engine.qq, custom exit-82 texts included). verify and
authenticate: qmail-verify and auth_smtp against the directory. rbl_check
and mx_exists: DNS through dnspython. exec_check: REJECTEXEC. tls_context:
control/smtpcert with control/tlsciphers, TLS 1.2 or newer.
"""

import asyncio
import ipaddress
import os
import ssl

from engine import execcheck, qdns, qq, queue, queued

CIPHERS = {  # libtls names qmail-ldap accepts, as OpenSSL cipher strings
    "secure": "ECDHE+AESGCM:ECDHE+CHACHA20", "default": "ECDHE+AESGCM:ECDHE+CHACHA20",
    "compat": "HIGH:!aNULL:!MD5", "legacy": "ALL:!aNULL", "insecure": "ALL:@SECLEVEL=0",
    "all": "ALL:@SECLEVEL=0",
}


class GroupCommit:
    """The worker's in-process queue: messages whose DATA ends while a flush is under way wait
    and are queued together by the next (engine.queue.enqueue_batch), so concurrent sessions
    share two syncfs calls instead of three fsyncs each; a lone message takes enqueue()'s
    path. The work runs in a thread, so the worker's other sessions go on meanwhile."""

    def __init__(self, home):
        self.home = home
        self.waiting = []   # (message, sender, recipients, future)
        self.busy = False

    async def enqueue(self, message, sender, recipients):
        """The message's id, or the QueueError that refused it."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((message, sender, recipients, future))
        if not self.busy:
            self._start(loop)
        return await future

    def _start(self, loop):
        batch, self.waiting = self.waiting, []
        self.busy = True
        items = [item[:3] for item in batch]
        work = loop.run_in_executor(None, lambda: queue.enqueue_batch(items, home=self.home,
                                                                      received=queue.RECEIVED_NETWORK))
        work.add_done_callback(lambda done: self._finish(loop, batch, done))

    def _finish(self, loop, batch, done):
        self.busy = False
        try:
            results = done.result()
        except Exception as e:  # a bug must refuse the messages (451), never hang their sessions
            results = [queue.QueueError(queue.EXIT_BUG, f"internal error: {e}")] * len(batch)
        for (*_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
        if self.waiting:
            self._start(loop)


class Services:
    def __init__(self, home):
        self.home = home
        self._my_ips = None
        self._tls = {}
        # in a root installation the workers run as qmaild and the queue belongs to qmailq:
        # then messages go to the master's qmail-queue service (engine.queued), which runs as
        # qmailq, or through bin/qmail-queue (setuid qmailq) as qmail-smtpd's do
        queue = os.path.join(home, "queue")
        self.in_process = all(os.access(os.path.join(queue, d), os.W_OK) for d in ("pid", "intd", "todo"))
        self.committer = GroupCommit(home)

    # --- queue --------------------------------------------------------------------------
    async def submit(self, message, sender, recipients, extra_env=None, qmailqueue=None):
        """K on success, else the D/Z text qmail-queue's caller would print.

        extra_env (RELAYCLIENT, SMTPAUTHUSER) is what a $QMAILQUEUE program sees.
        """
        enc = lambda a: a.encode("utf-8", "surrogateescape")  # noqa: E731
        sender, recipients = enc(sender), [enc(r) for r in recipients]
        loop = asyncio.get_running_loop()
        if qmailqueue or not self.in_process:
            env = {**os.environ, **(extra_env or {})}
            if qmailqueue:
                env["QMAILQUEUE"] = qmailqueue
                send = lambda: qq.submit(message, sender, recipients, env=env)  # noqa: E731
            else:  # the master's qmail-queue service, else the setuid program
                send = lambda: queued.submit(message, sender, recipients, self.home, env)  # noqa: E731
            text = await loop.run_in_executor(None, send)
            return text or "K"
        result = await self.committer.enqueue(message, sender, recipients)
        return result.text if isinstance(result, queue.QueueError) else "K"

    # --- directory ------------------------------------------------------------------------
    async def verify(self, address):
        from engine import verify
        return await verify.check(self.home, address)

    async def authenticate(self, user, password):
        from engine import authsmtp
        return await authsmtp.check(self.home, user, password)

    # --- DNS ---------------------------------------------------------------------------
    async def rbl_check(self, session, ip):
        """The rbllist message of the first rejecting list, or None; addheader hits go to X-RBL headers."""
        from engine import rbl
        return await rbl.check(session, ip, session.c.rbllist)

    async def mx_exists(self, domain):
        from engine import rbl
        return await rbl.mx_exists(domain)

    def is_my_ip(self, text):
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return False
        if self._my_ips is None:
            self._my_ips = {ipaddress.ip_address(a) for a in qdns.local_ips()}
        return ip in self._my_ips

    # --- content -----------------------------------------------------------------------
    def exec_check(self, message, signatures):
        return execcheck.has_executable(message, signatures)

    # --- TLS ---------------------------------------------------------------------------
    def tls_context(self, controls, path):
        """Server context for the PEM at `path` ($SSLCERT or control/smtpcert; relative to the qmail home)."""
        key = (path, controls.tlsciphers)
        if key not in self._tls:
            if not os.path.isabs(path):
                path = os.path.join(self.home, path)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(path, path)
            ctx.set_ciphers(CIPHERS.get(controls.tlsciphers.lower(), controls.tlsciphers))
            self._tls[key] = ctx
        return self._tls[key]
