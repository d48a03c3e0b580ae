"""qmail-qmqpc: the QMQP client (qmail-qmqpc.c; spec 5.1), a drop-in for qmail-queue.

    qmail-qmqpc [host]

It takes qmail-queue's interface (the message on fd 0, the envelope
`F<sender>\\0 T<recipient>\\0 ... \\0` on fd 1) and hands the message to a
QMQP server on port 628 instead of the local queue: mini-qmail with
QMAILQUEUE=qmail-qmqpc, and qmail-forward (`qmail-qmqpc <mailHost>`) in a
cluster. With a host argument that host's first A record (or an IPv4
literal) is the only server; without one the IPv4 addresses in
control/qmqpservers are tried in order until one accepts the connection.
The first K, Z or D byte of the server's answer decides.

Exit codes are qmail-queue's, as qmail.c turns them into texts: 0 queued,
31 permanent (D answer, or the host has no A record), 71 temporary (Z
answer, DNS trouble), 72 connect timed out, 73 connection refused, 74
communication failed, 54 reading the message, 55 control files, 56 socket,
61 qmail home, 91 envelope format, 51 out of memory. A D or Z answer's text
also goes to stderr.

Compression (qmail-ldap's QMQP_COMPRESS build option, here a runtime
choice): the whole request is one zlib stream when $QMQP_COMPRESS is set to
anything but "" or "0", or, with it unset, when control/qmqpcompress is 1.
Only qmail-ldap's qmail-qmqpd (and ours) understand that. control/qmqpcip
is the source address, control/timeoutconnect the connect timeout; reads
and writes time out after 60 s. QMAIL_PORT_QMQP replaces port 628 (qmail's
PORT_QMQP test option).
"""

import errno
import ipaddress
import os
import socket
import sys

from engine import compiled, conf, control

PORT = 628
IO_TIMEOUT = 60

OK, PERM, NOMEM, READ, CONTROL, SOCKET, HOME, TEMP = 0, 31, 51, 54, 55, 56, 61, 71
CONNECT_TIMEOUT, REFUSED, COMM, FORMAT = 72, 73, 74, 91
ANSWER_EXIT = {ord("K"): OK, ord("Z"): TEMP, ord("D"): PERM}


class Fatal(Exception):
    """Ends the run with qmail-qmqpc's exit code `code`."""

    def __init__(self, code, text=""):
        super().__init__(text)
        self.code = code


# --- configuration ------------------------------------------------------------------

def compression_wanted(home, env=None):
    value = (os.environ if env is None else env).get("QMQP_COMPRESS")
    if value is not None:
        return value not in ("", "0")
    return control.read_int("qmqpcompress", 0, home) == 1


def servers_for(host, home):
    """The addresses to try: the host's first A record, else control/qmqpservers (IPv4 entries only)."""
    if host is not None:
        return [first_a_record(host)]
    listed = control.read_list("qmqpservers", None, home)
    if not listed:  # missing or empty: control_readfile() did not return 1
        raise Fatal(CONTROL, "no control/qmqpservers")
    return [ip for ip in (_ipv4(s) for s in listed) if ip]


def _ipv4(text):
    """ip_scan(): an IPv4 address, else None (entries that are not are skipped)."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def first_a_record(host):
    """dns_ip(): the first A record, or the literal; no such host is permanent, DNS trouble temporary."""
    literal = _ipv4(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    if literal:
        return literal
    import asyncio  # only for names: the resolver's imports cost more than the rest of the run

    from engine import qdns
    status, answer = asyncio.run(qdns.query(qdns.make_resolver(), host, "A"))
    if status == qdns.DNS_SOFT:
        raise Fatal(TEMP, f"temporary DNS failure looking up {host}")
    if status or not answer:
        raise Fatal(PERM, f"no A record for {host}")
    return answer[0].address


def source_address(home):
    ip = _ipv4(control.read_line("qmqpcip", "0.0.0.0", home) or "")
    if ip is None:
        raise Fatal(CONTROL, "control/qmqpcip is not an IPv4 address")
    return ip


# --- the request ----------------------------------------------------------------------

def _netstring_head(n):
    return b"%d:" % n


def request_pieces(message, sender, recipients):
    """The QMQP request as byte pieces (the message is not copied)."""
    after = bytearray(b",")
    for a in [sender, *recipients]:
        after += b"%d:%s," % (len(a), a)
    head = _netstring_head(len(message))
    total = len(head) + len(message) + len(after)
    return [_netstring_head(total) + head, message, bytes(after) + b","]


def parse_envelope(data):
    """(sender, recipients) from qmail-queue's envelope bytes; Fatal(91) if malformed."""
    fields = data.split(b"\0")
    # fields ends with what follows the last NUL: the terminating empty field, then nothing
    if len(fields) < 3 or not fields[0].startswith(b"F"):
        raise Fatal(FORMAT, "envelope does not start with F")
    recipients = []
    for f in fields[1:-1]:  # the last field is what follows the last NUL: never a whole record
        if not f:  # the empty record ends the envelope; anything after it is ignored
            return fields[0][1:], recipients
        if not f.startswith(b"T"):
            raise Fatal(FORMAT, "envelope recipient does not start with T")
        recipients.append(f[1:])
    raise Fatal(FORMAT, "envelope not terminated")


# --- talking to a server ---------------------------------------------------------------

def connect(ip, port, source, timeout):
    """A connected socket, or None after setting the failure's exit code (72 timeout, 73 otherwise)."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        raise Fatal(SOCKET, f"unable to create socket: {e.strerror}") from e
    try:
        if source != "0.0.0.0":
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect((ip, port))
    except TimeoutError:
        sock.close()
        return CONNECT_TIMEOUT
    except OSError as e:
        sock.close()
        return CONNECT_TIMEOUT if e.errno == errno.ETIMEDOUT else REFUSED
    sock.settimeout(IO_TIMEOUT)
    return sock


def send_request(sock, pieces, compress):
    try:
        if compress:
            encoder = compiled.load("zdata").ZEncoder()
            for p in pieces:
                sock.sendall(encoder.compress(p))
            sock.sendall(encoder.finish())
        else:
            for p in pieces:
                sock.sendall(p)
    except OSError as e:
        raise Fatal(COMM, f"sending: {e.strerror or e}") from e


def read_answer(sock):
    """(exit code, text): the first K, Z or D byte decides, the rest of the reply netstring is the text."""
    got = bytearray()
    code = None
    while True:
        try:
            chunk = sock.recv(4096)
        except OSError as e:
            if code is not None:
                break
            raise Fatal(COMM, f"reading: {e.strerror or e}") from e
        if not chunk:
            break
        got += chunk
        if code is None:
            for ch in got:
                if ch in ANSWER_EXIT:
                    code = ANSWER_EXIT[ch]
                    break
        if code is not None and _answer_complete(got):
            break
    if code is None:
        raise Fatal(COMM, "connection closed without an answer")
    return code, _answer_text(got)


def _answer_complete(data):
    length, colon, rest = bytes(data).partition(b":")
    return bool(colon) and length.isdigit() and len(rest) > int(length)


def _answer_text(data):
    length, colon, rest = bytes(data).partition(b":")
    text = rest[:int(length)] if colon and length.isdigit() else bytes(data)
    return text.decode("utf-8", "replace")


def deliver(servers, port, source, timeout, pieces, compress):
    """(code, text) from the first server that takes the connection; connect failures go on to the next."""
    last = (CONTROL, "no usable QMQP server")
    for ip in servers:
        sock = connect(ip, port, source, timeout)
        if isinstance(sock, int):
            last = (sock, f"{'connection to' if sock == REFUSED else 'timeout connecting to'} {ip} failed")
            continue
        with sock:
            send_request(sock, pieces, compress)
            return read_answer(sock)
    return last


def send(host, message, sender, recipients, home=None, compress=None):
    """Hand one message to a QMQP server: (qmail-qmqpc exit code, answer or failure text).

    host: a name or IPv4 literal, or None for control/qmqpservers. message:
    bytes or a binary file. sender, recipients: bytes (str is UTF-8
    encoded). compress: None = as $QMQP_COMPRESS / control/qmqpcompress.
    """
    home = home or conf.qmailhome()
    try:
        if not os.path.isdir(home):
            raise Fatal(HOME, f"no qmail home {home}")
        servers, source, timeout = configuration(host, home)
        if compress is None:
            compress = compression_wanted(home)
        data = message if isinstance(message, (bytes, bytearray, memoryview)) else message.read()
        enc = lambda a: a.encode("utf-8", "surrogateescape") if isinstance(a, str) else bytes(a)  # noqa: E731
        pieces = request_pieces(data, enc(sender), [enc(r) for r in recipients])
        return deliver(servers, port(), source, timeout, pieces, compress)
    except Fatal as e:
        return e.code, str(e)
    except MemoryError:
        return NOMEM, "out of memory"


def configuration(host, home):
    """Servers, source address and connect timeout, in qmail-qmqpc's order (control errors: 55)."""
    try:
        servers = servers_for(host, home)
        timeout = control.read_int("timeoutconnect", 60, home)
        return servers, source_address(home), timeout
    except control.ControlError as e:
        raise Fatal(CONTROL, str(e)) from e


def port():
    return int(os.environ.get("QMAIL_PORT_QMQP") or PORT)


def read_fd(fd):
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError as e:
            raise Fatal(READ, f"unable to read fd {fd}: {e.strerror}") from e
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def run(argv):
    host = argv[0] if argv else None
    home = conf.qmailhome()
    try:
        os.chdir(home)
    except OSError as e:
        raise Fatal(HOME, f"unable to switch to {home}: {e.strerror}") from e
    servers, source, timeout = configuration(host, home)
    message = read_fd(0)
    sender, recipients = parse_envelope(read_fd(1))
    pieces = request_pieces(message, sender, recipients)
    return deliver(servers, port(), source, timeout, pieces, compression_wanted(home))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        code, text = run(argv)
    except Fatal as e:
        code, text = e.code, str(e)
    except MemoryError:
        code, text = NOMEM, "out of memory"
    if code and text:
        if code in (PERM, TEMP) and text[:1] in ("D", "Z"):
            text = text[1:]
        sys.stderr.write(f"qmail-qmqpc: {text}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
