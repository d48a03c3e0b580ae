"""`make run`: a demo instance under ./run, started in the foreground.

    python -m engine.demo [BASE] [--smtp-port N]     (BASE defaults to ./run)

Creates BASE/qmail (a single-user qmail home for the domain example.test)
with an SMTP listener on 127.0.0.1:2525, users alice and bob in users/assign
(compiled with qmail-newu), and a throwaway OpenLDAP slapd on a loopback port
(engine/slapd.py, data in BASE/ldap) holding sample
qmailUser entries: active users, a forward-only alias, a forward, an
auto-reply, a small quota and a disabled account. control/ldapserver and
friends point the master at it, with ldaplocaldelivery=1 so users/assign
still answers for names the directory does not know. When slapd cannot be
started the demo says why in one line and runs on users/assign alone.

It prints the users and the swaks / ldapsearch / qmail-ldaplookup lines to
try them, runs qmail-start with ./Maildir/ as the default delivery, and on
Ctrl-C (or SIGTERM) stops the master first and slapd after it.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

from engine import install, slapd

DOMAIN = "example.test"
SMTP_PORT = 2525
USERS = ("alice", "bob")  # users/assign: the fallback when the directory has no entry
LDAP_CONTROLS = ("ldapserver", "ldapbasedn", "ldaplocaldelivery", "ldapuid", "ldapgid", "quotawarning")
VIRTUAL_ID = 1000  # ldapuid/ldapgid for entries without qmailUID; a single-user instance delivers as its owner

# (local part, attributes beyond mail/uid, what it shows); all but the FORWARD_ONLY ones get
# homeDirectory BASE/home/<local> with mailMessageStore ./Maildir/
FORWARD_ONLY = ("sales",)
SAMPLE_USERS = (
    ("alice", {"mailAlternateAddress": f"alice.smith@{DOMAIN}"}, "active user, also alice.smith@"),
    ("bob", {}, "active user"),
    ("sales", {"mailForwardingAddress": [f"alice@{DOMAIN}", f"bob@{DOMAIN}"]},
     "alias: no mailbox, forwards to alice and bob"),
    ("carol", {"mailForwardingAddress": f"bob@{DOMAIN}"}, "keeps a copy and forwards to bob"),
    ("dave", {"deliveryMode": "reply", "mailReplyText": "Dave is away until Monday.\n"},
     "auto-reply (once per sender in 14 days)"),
    ("erin", {"mailQuotaSize": "3000"}, "3000-byte quota: a warning, then over-quota bounces"),
    ("frank", {"accountStatus": "disabled"}, "disabled: bounces (#5.2.1)"),
)
QUOTAWARNING = "Your mailbox is almost full. Please delete some messages.\n"


def run_module(module, *args, **kw):
    subprocess.run([sys.executable, "-m", module, *args], check=True, **kw)


def write_control(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


def prepare(base, smtp_port=SMTP_PORT):
    base = os.path.abspath(base)
    home = os.path.join(base, "qmail")
    install.setup(home, single_user=True, me=f"mail.{DOMAIN}")
    for name, text in (("locals", f"{DOMAIN}\nmail.{DOMAIN}\nlocalhost\n"),
                       ("rcpthosts", f"{DOMAIN}\nmail.{DOMAIN}\n"),
                       ("defaultdomain", f"{DOMAIN}\n"), ("concurrencylocal", "4\n"),
                       ("smtplisten", f"127.0.0.1:{smtp_port}\n"), ("smtpworkers", "1\n"),
                       ("smtprules", "127.:allow,RELAYCLIENT=\"\"\n:allow\n")):
        write_control(home, name, text)
    lines = []
    for user in USERS:
        uhome = user_home(base, user)
        if not os.path.isdir(os.path.join(uhome, "Maildir")):
            run_module("engine.maildirmake", os.path.join(uhome, "Maildir"))
        lines.append(f"={user}:{user}:{os.getuid()}:{os.getgid()}:{uhome}:::")
    with open(os.path.join(home, "users", "assign"), "w") as f:
        f.write("\n".join(lines) + "\n.\n")
    run_module("engine.newu", env={**os.environ, "QMAILHOME": home})
    return base, home


def user_home(base, user):
    """BASE/home/<user>, mode 0755 (qmail-local refuses a group- or world-writable home)."""
    uhome = os.path.join(base, "home", user)
    os.makedirs(uhome, exist_ok=True)
    os.chmod(uhome, 0o755)
    return uhome


# --- the directory -----------------------------------------------------------------

def sample_ldif(base):
    """The sample entries as LDIF for slapadd (homes created here; Maildirs appear on first delivery)."""
    out = []
    for local, attrs, _ in SAMPLE_USERS:
        entry = {"objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson", "qmailUser"],
                 "uid": local, "cn": local, "sn": local, "mail": f"{local}@{DOMAIN}", **attrs}
        if local not in FORWARD_ONLY:
            entry.update(homeDirectory=user_home(base, local), mailMessageStore="./Maildir/")
        out.append(slapd.entry_ldif(f"uid={local},{slapd.PEOPLE}", entry))
    return "".join(out)


def stop_stale(directory):
    """A slapd left running on this instance by a demo that was killed holds its database: end it."""
    try:
        with open(os.path.join(directory, "slapd.pid")) as f:
            pid = int(f.read().split()[0])
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() != "slapd":
                return
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        return
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.05)


def start_directory(base, home):
    """(running Slapd, None), or (None, why) with the LDAP control files removed."""
    if not os.access(slapd.SLAPD, os.X_OK):
        return _no_directory(home, f"{slapd.SLAPD} is not installed (apt-get install slapd ldap-utils)")
    directory = os.path.join(base, "ldap")
    stop_stale(directory)
    try:
        server = slapd.make_instance(directory, None, sample_ldif(base))
        server.start(detach=True)  # its own session: Ctrl-C reaches the master, we stop slapd after it
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        return _no_directory(home, f"slapd did not start: {e}")
    for name, text in (("ldapserver", f"{server.hostport}\n"), ("ldapbasedn", f"{server.suffix}\n"),
                       ("ldaplocaldelivery", "1\n"), ("ldapuid", f"{VIRTUAL_ID}\n"),
                       ("ldapgid", f"{VIRTUAL_ID}\n"), ("quotawarning", QUOTAWARNING)):
        write_control(home, name, text)
    return server, None


def _no_directory(home, why):
    for name in LDAP_CONTROLS:
        try:
            os.unlink(os.path.join(home, "control", name))
        except FileNotFoundError:
            pass
    return None, why


# --- what to try ----------------------------------------------------------------------

def banner(base, home, smtp_port, server, why):
    bindir = os.path.dirname(sys.executable)
    lines = ["", f"pyqmail-ldap demo instance: QMAILHOME={home}"]
    if server is None:
        lines += [f"No LDAP directory: {why}; mail for {', '.join(USERS)} goes by users/assign.", ""]
    else:
        lines += [f"LDAP directory: slapd on {server.url} (base {server.suffix}, data in {server.directory}),",
                  f"used through control/ldapserver; users/assign still answers for {', '.join(USERS)}.",
                  "", f"Sample LDAP users (@{DOMAIN}):"]
        for local, _, what in SAMPLE_USERS:
            lines.append(f"    {local + '@' + DOMAIN:<22} {what}")
        lines += ["", "Try them:", "",
                  f"    swaks --server 127.0.0.1:{smtp_port} --from bob@{DOMAIN} --to sales@{DOMAIN}",
                  f"    swaks --server 127.0.0.1:{smtp_port} --from bob@{DOMAIN} --to dave@{DOMAIN}",
                  f"    swaks --server 127.0.0.1:{smtp_port} --from bob@{DOMAIN} --to frank@{DOMAIN}",
                  f"    ldapsearch -x -LLL -H {server.url} -b {server.suffix} '(mail=carol@{DOMAIN})'",
                  f"    QMAILHOME={home} {bindir}/qmail-ldaplookup -m alice.smith@{DOMAIN}",
                  "", f"Mail lands in {base}/home/<user>/Maildir/new/; replies and bounces go to the sender "
                  f"(bob above)."]
    lines += ["", "Inject from another terminal:", "",
              f"    echo 'Subject: hello' | QMAILHOME={home} {bindir}/qmail-inject alice@{DOMAIN}",
              f"    swaks --server 127.0.0.1:{smtp_port} --to bob@{DOMAIN}",
              "", f"Queue: QMAILHOME={home} {bindir}/qmail-qstat. Ctrl-C stops everything.", ""]
    return "\n".join(lines)


# --- running -------------------------------------------------------------------------

def run_master(home):
    """qmail-start in the foreground until it exits; SIGINT/SIGTERM/SIGHUP reach it as qmail's run script would."""
    master = subprocess.Popen([sys.executable, "-m", "engine.start", "./Maildir/"],
                              env={**os.environ, "QMAILHOME": home}, cwd=home)

    def relay(sig, frame):
        master.send_signal(signal.SIGHUP if sig == signal.SIGHUP else signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, relay)
    return master.wait()


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m engine.demo", description="the `make run` demo instance")
    p.add_argument("base", nargs="?", default="run", help="directory for the instance (default ./run)")
    p.add_argument("--smtp-port", type=int, default=SMTP_PORT)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    base, home = prepare(args.base, args.smtp_port)
    server, why = start_directory(base, home)
    print(banner(base, home, args.smtp_port, server, why), flush=True)
    try:
        return run_master(home)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
