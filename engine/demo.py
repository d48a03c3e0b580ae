"""`make run`: a demo instance under ./run, started in the foreground.

Creates run/qmail (a single-user qmail home for the domain example.test),
users alice and bob with Maildirs under run/home, their users/assign
entries (compiled with qmail-newu) and an SMTP listener on 127.0.0.1:2525,
then prints how to inject a test message and where it lands, and runs
qmail-start with ./Maildir/ as the default delivery. Ctrl-C stops everything.
"""

import os
import subprocess
import sys

from engine import install

DOMAIN = "example.test"
SMTP_PORT = 2525
USERS = ("alice", "bob")


def run_module(module, *args, **kw):
    subprocess.run([sys.executable, "-m", module, *args], check=True, **kw)


def prepare(base):
    base = os.path.abspath(base)
    home = os.path.join(base, "qmail")
    install.setup(home, single_user=True, me=f"mail.{DOMAIN}")
    control = os.path.join(home, "control")
    for name, text in (("locals", f"{DOMAIN}\nmail.{DOMAIN}\nlocalhost\n"),
                       ("rcpthosts", f"{DOMAIN}\nmail.{DOMAIN}\n"),
                       ("defaultdomain", f"{DOMAIN}\n"), ("concurrencylocal", "4\n"),
                       ("smtplisten", f"127.0.0.1:{SMTP_PORT}\n"), ("smtpworkers", "1\n"),
                       ("smtprules", "127.:allow,RELAYCLIENT=\"\"\n:allow\n")):
        with open(os.path.join(control, name), "w") as f:
            f.write(text)
    lines = []
    for user in USERS:
        uhome = os.path.join(base, "home", user)
        os.makedirs(uhome, exist_ok=True)
        os.chmod(uhome, 0o755)
        if not os.path.isdir(os.path.join(uhome, "Maildir")):
            run_module("engine.maildirmake", os.path.join(uhome, "Maildir"))
        lines.append(f"={user}:{user}:{os.getuid()}:{os.getgid()}:{uhome}:::")
    with open(os.path.join(home, "users", "assign"), "w") as f:
        f.write("\n".join(lines) + "\n.\n")
    run_module("engine.newu", env={**os.environ, "QMAILHOME": home})
    return base, home


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    base, home = prepare(argv[0] if argv else "run")
    bindir = os.path.dirname(sys.executable)
    print(f"""
pyqmail-ldap demo instance: QMAILHOME={home}
Inject a test message from another terminal:

    echo 'Subject: hello' | QMAILHOME={home} {bindir}/qmail-inject alice@{DOMAIN}

It lands in {base}/home/alice/Maildir/new/ (bob@{DOMAIN} works too). Or by SMTP:

    swaks --server 127.0.0.1:{SMTP_PORT} --to bob@{DOMAIN}

Queue: QMAILHOME={home} {bindir}/qmail-qstat. Ctrl-C stops everything.
""", flush=True)
    os.environ["QMAILHOME"] = home
    os.execv(sys.executable, [sys.executable, "-m", "engine.start", "./Maildir/"])


if __name__ == "__main__":
    sys.exit(main())
