"""Line I/O for the POP3 programs, as qmail's substdio over timeoutread/timeoutwrite (qmail-popup.c,
qmail-pop3d.c, commands.c).

A `Channel` reads from one fd and writes to another (fd 0 / fd 1 under
tcpserver, the same socket in the master's POP3 pool) with qmail's 1200 s
timeouts; end of input, a timeout or a write error raises `Hangup`, which
the programs treat as qmail's die(). `commands` splits a line the way
commands.c does: up to LF, one trailing CR dropped, cut at a NUL, the verb
up to the first space (compared case-insensitively by the caller), the
argument after the spaces that follow it.
"""

import errno
import os
import select

TIMEOUT = 1200  # seconds, qmail-popup's and qmail-pop3d's saferead/safewrite
READ_SIZE = 4096


class Hangup(Exception):
    """The client went away, timed out, or could not be written to."""


class Channel:
    def __init__(self, fd_in, fd_out, initial=b"", timeout=TIMEOUT):
        self.fd_in, self.fd_out = fd_in, fd_out
        self.timeout = timeout
        self._in = bytearray(initial)
        self._out = bytearray()

    def _wait(self, fd, readable):
        try:
            r, w, _ = select.select([fd] if readable else [], [] if readable else [fd], [], self.timeout)
        except InterruptedError:
            return self._wait(fd, readable)
        if not (r or w):
            raise Hangup("timeout")

    def _fill(self):
        self._wait(self.fd_in, True)
        try:
            data = os.read(self.fd_in, READ_SIZE)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR):
                return
            raise Hangup(str(e)) from e
        if not data:
            raise Hangup("end of input")
        self._in += data

    def read_line(self):
        """One line without its LF (qmail reads byte by byte until LF; a last line without LF is lost)."""
        while True:
            i = self._in.find(b"\n")
            if i >= 0:
                line = bytes(self._in[:i])
                del self._in[:i + 1]
                return line
            self._fill()

    def pending(self):
        """Bytes read from the client but not yet consumed (handed on to the next program)."""
        return bytes(self._in)

    def put(self, data):
        self._out += data

    def flush(self):
        view = memoryview(bytes(self._out))
        self._out.clear()
        while view:
            self._wait(self.fd_out, False)
            try:
                n = os.write(self.fd_out, view)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    continue
                raise Hangup(str(e)) from e
            view = view[n:]

    def send(self, data):
        self.put(data)
        self.flush()


def command(line):
    """(verb lower-cased, argument) of one command line, as commands.c splits it."""
    if line.endswith(b"\r"):
        line = line[:-1]
    line = line.split(b"\0", 1)[0]
    verb, _, arg = line.partition(b" ")
    return verb.lower(), arg.lstrip(b" ")
