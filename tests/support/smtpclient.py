"""A raw SMTP dialogue client for exact reply lines (smtplib hides continuation details and bare texts)."""

import socket
import time


class Dialogue:
    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def read_reply(self):
        """One whole reply, lines joined with LF, CRLF removed."""
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return b"\n".join(lines).decode("utf-8", "replace")

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def raw(self, wait=0.5):
        """Whatever arrives within `wait` seconds (for replies sent without CRLF)."""
        self.sock.settimeout(wait)
        end = time.monotonic() + wait
        try:
            while time.monotonic() < end:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
        except socket.timeout:
            pass
        out, self.buf = self.buf, b""
        return out

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.read_reply()

    def closed(self, wait=2.0):
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except (socket.timeout, ConnectionResetError):
            return False

    def close(self):
        self.sock.close()
