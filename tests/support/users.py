"""Test mailbox users for a single-user qmail home: Maildirs plus users/assign compiled with qmail-newu."""

import os
import subprocess
import sys


def make_users(home, base, names, domain="example.test"):
    """Create users `names` with homes under `base` and ./Maildir/; returns {name: maildir path}."""
    control = os.path.join(home, "control")
    with open(os.path.join(control, "locals"), "w") as f:
        f.write(f"{domain}\nlocalhost\n")
    with open(os.path.join(control, "rcpthosts"), "w") as f:
        f.write(f"{domain}\n")
    lines, maildirs = [], {}
    for name in names:
        uhome = os.path.join(base, name)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(uhome, "Maildir", sub), exist_ok=True)
        os.chmod(uhome, 0o755)
        os.chmod(os.path.join(uhome, "Maildir"), 0o700)
        maildirs[name] = os.path.join(uhome, "Maildir")
        lines.append(f"={name}:{name}:{os.getuid()}:{os.getgid()}:{uhome}:::")
        lines.append(f"+{name}-:{name}:{os.getuid()}:{os.getgid()}:{uhome}:-::")
    with open(os.path.join(home, "users", "assign"), "w") as f:
        f.write("\n".join(lines) + "\n.\n")
    subprocess.run([sys.executable, "-m", "engine.newu"], check=True,
                   env={**os.environ, "QMAILHOME": home})
    return maildirs


def delivered(maildir):
    """Files in new/ and cur/ of a Maildir."""
    return [os.path.join(maildir, d, n) for d in ("new", "cur") for n in os.listdir(os.path.join(maildir, d))]
