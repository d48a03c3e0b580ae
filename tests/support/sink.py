"""Postfix's smtp-sink on a loopback address and free port, optionally dumping each message to a directory."""

import os
import shutil
import socket
import subprocess
import time


def free_tcp_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class SmtpSink:
    def __init__(self, host="127.0.0.1", options=(), dumpdir=None):
        self.host = host
        self.port = free_tcp_port(host)
        self.dumpdir = dumpdir
        binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        self.args = [binary, "-u", "nobody", *options]
        if dumpdir:
            os.makedirs(dumpdir, exist_ok=True)
            os.chmod(dumpdir, 0o777)  # smtp-sink writes as nobody
            self.args += ["-d", os.path.join(dumpdir, "%M.")]
        self.args += [f"{host}:{self.port}", "64"]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.host, self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("smtp-sink did not start: " + self.proc.stderr.read().decode())
                time.sleep(0.02)

    def dumps(self):
        """The dumped transactions (smtp-sink's -d files), oldest first."""
        files = sorted((os.path.join(self.dumpdir, f) for f in os.listdir(self.dumpdir)), key=os.path.getmtime)
        return [open(f, "rb").read() for f in files]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc:
            self.proc.stderr.close()
