"""A throwaway Postfix instance for side-by-side benchmarks (Debian's postfix + postfix-ldap).

Runs as root on 127.0.0.1:PORT with its own config, queue and data
directories under DIR, delivering with the virtual(8) agent to Maildirs
whose paths come from the same LDAP directory our server uses
(mail -> mailMessageStore), all mailboxes under one uid/gid. What it
fsyncs: the queue file once (cleanup) and each delivered Maildir file once
(virtual) — two per message, as the README's fairness rules state.

    python bench/postfix.py start DIR PORT LDAPURI BASEDN UID GID
    python bench/postfix.py stop DIR
"""

import os
import subprocess
import sys

SERVICES = ("pickup", "cleanup", "qmgr", "rewrite", "bounce", "defer", "trace", "verify", "flush",
            "proxymap", "proxywrite", "smtp", "relay", "showq", "error", "retry", "discard", "local",
            "virtual", "anvil", "scache", "postlog")


def master_cf(port):
    """Debian's master.cf services, unchrooted, with smtpd on 127.0.0.1:port only."""
    lines = [f"127.0.0.1:{port} inet n - n - - smtpd"]
    with open("/etc/postfix/master.cf") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and not line[0].isspace() and fields[0] in SERVICES and fields[1] != "inet":
                fields[4] = "n"
                lines.append(" ".join(fields[:8]) + (" " + " ".join(fields[8:]) if fields[8:] else ""))
    return "\n".join(lines) + "\n"


def main_cf(base, ldap_cf, uid, gid):
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
virtual_mailbox_domains = example.test
virtual_mailbox_base = /
virtual_mailbox_maps = ldap:{ldap_cf}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
virtual_destination_concurrency_limit = 20
default_process_limit = 100
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


def start(base, port, uri, basedn, uid, gid):
    base = os.path.abspath(base)
    for d in ("etc", "queue", "data"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    etc = os.path.join(base, "etc")
    write(os.path.join(etc, "ldap-users.cf"), ldap_cf(uri, basedn))
    write(os.path.join(etc, "main.cf"), main_cf(base, os.path.join(etc, "ldap-users.cf"), uid, gid))
    write(os.path.join(etc, "master.cf"), master_cf(port))
    subprocess.run(["chown", "-R", "postfix", os.path.join(base, "data")], check=True)
    subprocess.run(["postfix", "-c", etc, "set-permissions"], check=False, capture_output=True)
    subprocess.run(["postfix", "-c", etc, "check"], check=True)
    subprocess.run(["postfix", "-c", etc, "start"], check=True)


def stop(base):
    etc = os.path.join(os.path.abspath(base), "etc")
    subprocess.run(["postfix", "-c", etc, "stop"], check=False)


if __name__ == "__main__":
    if sys.argv[1:2] == ["start"]:
        start(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7])
    elif sys.argv[1:2] == ["stop"]:
        stop(sys.argv[2])
    else:
        sys.exit(__doc__)
