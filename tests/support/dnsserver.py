"""A real DNS server for tests: dnsmasq on 127.0.0.1 at a free high port, answering only from the records given.

Names under the `--local` domains that have no record get NXDOMAIN; any other name is REFUSED
(no upstream servers), which resolvers treat as a temporary failure.
"""

import shutil
import socket
import subprocess
import time

import dns.resolver


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DnsServer:
    def __init__(self, mx=(), hosts=(), local=("test",)):
        """mx: (domain, target, pref) triples; hosts: (name, address) pairs (A or AAAA)."""
        self.port = free_udp_port()
        self.args = [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                     f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                     "--no-hosts", "--user=root", "--pid-file=", "--cache-size=0"]
        self.args += [f"--local=/{d}/" for d in local]
        self.args += [f"--mx-host={d},{t},{p}" for d, t, p in mx]
        self.args += [f"--host-record={n},{a}" for n, a in hosts]
        self.proc = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], self.port, 0.5
        deadline = time.monotonic() + 10
        while True:
            try:
                resolver.resolve("probe.invalid.", "A")
            except (dns.resolver.NoNameservers, dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return self  # it answered
            except dns.exception.Timeout:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("dnsmasq did not start: " + self.proc.stderr.read().decode())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc:
            self.proc.stderr.close()
