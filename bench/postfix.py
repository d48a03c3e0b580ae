"""A throwaway Postfix instance for side-by-side benchmarks (Debian's postfix + postfix-ldap).

Runs as root on 127.0.0.1:PORT with its own config, queue and data
directories under DIR, delivering with the virtual(8) agent to Maildirs
whose paths come from the same LDAP directory our server uses
(mail -> mailMessageStore, prefixed with virtual_mailbox_base), all
mailboxes under one uid/gid. smtpd refuses unknown recipients at RCPT time
from the same LDAP table (smtpd_reject_unlisted_recipient), as our
RCPTCHECK does. What it fsyncs: the queue file once (cleanup) and each
delivered Maildir file once (virtual) — two per message, as the README's
fairness rules state; bench/suite.py counts them with strace.

    python bench/postfix.py start DIR PORT LDAPURI BASEDN UID GID [DOMAIN ...]
    python bench/postfix.py stop DIR
"""

import os
import subprocess
import sys

SERVICES = ("pickup", "cleanup", "qmgr", "rewrite", "bounce", "defer", "trace", "verify", "flush",
            "proxymap", "proxywrite", "smtp", "relay", "showq", "error", "retry", "discard", "local",
            "virtual", "anvil", "scache", "postlog")


def master_cf(port, concurrency):
    """Debian's master.cf services, unchrooted, with smtpd on 127.0.0.1:port only and at most
    `concurrency` virtual(8) delivery processes."""
    lines = [f"127.0.0.1:{port} inet n - n - - smtpd"]
    with open("/etc/postfix/master.cf") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and not line[0].isspace() and fields[0] in SERVICES and fields[1] != "inet":
                fields[4] = "n"
                if fields[0] == "virtual":
                    fields[6] = str(concurrency)
                lines.append(" ".join(fields[:8]) + (" " + " ".join(fields[8:]) if fields[8:] else ""))
    return "\n".join(lines) + "\n"


def main_cf(base, ldap_cf, uid, gid, domains, mailbox_base, concurrency):
    return f"""compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench-postfix.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = {" ".join(domains)}
virtual_mailbox_base = {mailbox_base}
virtual_mailbox_maps = ldap:{ldap_cf}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
virtual_destination_concurrency_limit = {concurrency}
default_process_limit = 100
max_idle = 3600s
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
in_flow_delay = 0
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
smtp_host_lookup = native
biff = no
"""


def ldap_cf(uri, basedn):
    return (f"server_host = {uri}\nsearch_base = {basedn}\nquery_filter = (mail=%s)\n"
            f"result_attribute = mailMessageStore\nversion = 3\n")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def start(base, port, uri, basedn, uid, gid, domains=("example.test",), mailbox_base="/", concurrency=20):
    """Configure and start the instance in `base`; Maildirs are mailbox_base + mailMessageStore."""
    base = os.path.abspath(base)
    for d in ("etc", "queue", "data"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    etc = os.path.join(base, "etc")
    write(os.path.join(etc, "ldap-users.cf"), ldap_cf(uri, basedn))
    write(os.path.join(etc, "main.cf"), main_cf(base, os.path.join(etc, "ldap-users.cf"), uid, gid, domains,
                                                 mailbox_base, concurrency))
    write(os.path.join(etc, "master.cf"), master_cf(port, concurrency))
    subprocess.run(["chown", "-R", "postfix", os.path.join(base, "data")], check=True)
    subprocess.run(["postfix", "-c", etc, "set-permissions"], check=False, capture_output=True)
    for action in ("check", "start"):
        p = subprocess.run(["postfix", "-c", etc, action], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"postfix {action} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")


def stop(base):
    etc = os.path.join(os.path.abspath(base), "etc")
    subprocess.run(["postfix", "-c", etc, "stop"], check=False, capture_output=True)


def master_pid(base):
    """The pid of the instance's master(8), from its queue's pid file."""
    with open(os.path.join(os.path.abspath(base), "queue", "pid", "master.pid")) as f:
        return int(f.read().split()[0])


def queue_empty(base):
    """No message left in incoming/, active/ or deferred/ (every delivery finished)."""
    root = os.path.join(os.path.abspath(base), "queue")
    return not any(files for name in ("incoming", "active", "deferred")
                   for _, _, files in os.walk(os.path.join(root, name)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["start"]:
        start(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7],
              sys.argv[8:] or ("example.test",))
    elif sys.argv[1:2] == ["stop"]:
        stop(sys.argv[2])
    else:
        sys.exit(__doc__)
