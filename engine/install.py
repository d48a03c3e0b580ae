"""`make setup` (qmail's install + instchk + config): creates a complete qmail home.

As root: qmail's groups and users (created when missing, as system accounts
without a login shell), the tree of engine.hier with qmail's owners and
modes, bin/ links to the console scripts, and a minimal control/ (me,
locals, rcpthosts, defaultdelivery) when those files are missing. As another
user, or with --single-user: the same tree and modes owned by that user.

Usage: qmail-setup [--single-user] [--me HOST] QMAILHOME
"""

import argparse
import grp
import os
import pwd
import shutil
import socket
import subprocess
import sys
from importlib import metadata

from engine import conf, hier

DISTRIBUTION = "pyqmail-ldap"
NOLOGIN = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), "/bin/false")


def ensure_group(name):
    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True)


def ensure_user(name, group, home):
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-g", group,
                        "-d", home, "-s", NOLOGIN, name], check=True)


def ensure_ids(home):
    """qmail's conf-groups and conf-users; alias lives in ~alias, the others in the qmail home."""
    for g in conf.GROUPS:
        ensure_group(g)
    for u in conf.USERS:
        user_home = os.path.join(home, "alias") if u == conf.USER_ALIAS else home
        ensure_user(u, conf.USER_GROUP[u], user_home)


def console_scripts():
    """{program name: path of its console script} for this distribution."""
    bindir = os.path.dirname(sys.executable)
    found = {}
    for ep in metadata.distribution(DISTRIBUTION).entry_points:
        if ep.group == "console_scripts":
            script = os.path.join(bindir, ep.name)
            found[ep.name] = script if os.path.exists(script) else shutil.which(ep.name)
    return {name: path for name, path in found.items() if path}


def link_programs(home):
    """bin/<program> -> the console script, replacing older links."""
    bindir = os.path.join(home, "bin")
    for name, target in console_scripts().items():
        link = os.path.join(bindir, name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)


SETUID_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "ext", "qmail-queue-setuid.c")


def install_setuid_queue(home):
    """As root, bin/qmail-queue becomes qmail's setuid-qmailq front end (mode 4711) built from ext/."""
    target = os.path.join(home, "bin", "qmail-queue")
    tmp = target + ".new"
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or not os.path.exists(SETUID_SOURCE):
        raise OSError(f"cannot build {target}: need a C compiler and {SETUID_SOURCE}")
    python = os.path.join(os.path.dirname(sys.executable), "python3")
    if not os.path.exists(python):
        python = sys.executable
    subprocess.run([cc, "-O2", "-o", tmp, f'-DQMAILHOME="{home}"', f'-DPYTHON="{python}"',
                    SETUID_SOURCE], check=True)
    pw = pwd.getpwnam(conf.USER_QUEUE)
    os.chown(tmp, pw.pw_uid, grp.getgrnam(conf.GROUP_QMAIL).gr_gid)
    os.chmod(tmp, 0o4711)
    os.replace(tmp, target)


def write_if_missing(path, text):
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)


def default_controls(home, me):
    """What qmail's ./config writes: me, locals, rcpthosts; plus the default delivery."""
    control = os.path.join(home, "control")
    write_if_missing(os.path.join(control, "me"), me + "\n")
    write_if_missing(os.path.join(control, "locals"), f"localhost\n{me}\n")
    write_if_missing(os.path.join(control, "rcpthosts"), f"localhost\n{me}\n")
    write_if_missing(os.path.join(control, "defaultdelivery"), "./Maildir/\n")


def setup(home, single_user, me):
    home = os.path.abspath(home)
    if not single_user:
        ensure_ids(home)
    hier.create(home, single_user)
    link_programs(home)
    if not single_user:
        install_setuid_queue(home)
    default_controls(home, me)
    return home


def parse_args(argv):
    p = argparse.ArgumentParser(prog="qmail-setup", description="create a qmail home")
    p.add_argument("home", nargs="?", default=conf.qmailhome())
    p.add_argument("--single-user", action="store_true",
                   help="own everything as the invoking user (default when not root)")
    p.add_argument("--me", default=socket.getfqdn(), help="host name for control/me")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    single_user = args.single_user or os.getuid() != 0
    try:
        home = setup(args.home, single_user, args.me)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"qmail-setup: fatal: {e}", file=sys.stderr)
        return 111
    mode = "single-user" if single_user else "qmail users"
    print(f"qmail-setup: {home} is ready ({mode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
