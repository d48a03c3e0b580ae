"""A throwaway Dovecot (Debian's dovecot-imapd/dovecot-pop3d) on a loopback address, high ports, with its own
configuration and base_dir: passdb checkpassword = our auth_dovecot, userdb prefetch."""

import os
import shutil
import socket
import subprocess
import tempfile
import time

from support.ports import free_port

CONFIG = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap pop3
listen = {host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
mail_location = maildir:~/Maildir
first_valid_uid = 100
import_environment = TZ QMAILHOME
# auth_dovecot never changes uid; it must read ~control and the venv like the administrator's install
service auth {{
  user = root
}}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {host}
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
passdb {{
  driver = checkpassword
  args = {checkpassword}
}}
userdb {{
  driver = prefetch
}}
"""


class Dovecot:
    def __init__(self, checkpassword, qmailhome, host="127.0.0.1"):
        self.base = tempfile.mkdtemp(prefix="pyqdovecot-", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.host = host
        self.imap, self.pop3 = free_port(host), free_port(host)
        self.config = os.path.join(self.base, "dovecot.conf")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(base=self.base, host=host, imap=self.imap, pop3=self.pop3, checkpassword=checkpassword))
        os.makedirs(os.path.join(self.base, "state"))
        self.proc = subprocess.Popen([shutil.which("dovecot") or "/usr/sbin/dovecot", "-F", "-c", self.config],
                                     env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "QMAILHOME": qmailhome})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, self.imap), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.log()
                time.sleep(0.1)
        self.stop()
        raise AssertionError("dovecot did not start: " + self.log())

    def log(self):
        try:
            with open(os.path.join(self.base, "dovecot.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)
