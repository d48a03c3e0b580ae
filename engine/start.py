"""qmail-start: starts and supervises the queue's processes (qmail-start.c).

    qmail-start [DEFAULTDELIVERY [LOGGER ARGS...]]

DEFAULTDELIVERY is the aliasempty instruction for users without a .qmail
file (qmail's default `./Mailbox`; the run script usually passes
control/defaultdelivery). Further arguments are a logger command that
gets every log line on its stdin (run as qmaill), e.g. `splogger qmail`
or `multilog t ./main`; without one, log lines go to stdout.

The master takes lock/sendmutex (a second instance on the same queue exits
111), creates the pools' sockets in queue/lock/ (owned by qmails, mode
0600: only the scheduler may ask for deliveries), then runs the arbiter
(engine.arbiter) with the roles: qmail-send and qmail-todo as qmails,
qmail-clean as qmailq, the local pool (concurrencylocal workers, capped by
conf-spawn) as root, qmail-rspawn as qmailr, and qmail-queue as qmailq: the
queue service (engine.queued) the network servers, running as qmaild, hand
their messages to. A single-user instance (queue not owned by qmailq) runs
everything as the invoking user, and its servers write the queue themselves.
"""

import fcntl
import os
import pwd
import socket
import subprocess
import sys

from engine import conf, control, hier, queued
from engine.arbiter import Arbiter, Role, log

SOCKETS = ("lspawn", "rspawn", "clean", "send")
NET_SERVICES = {"smtp": "qmail-smtpd", "qmtp": "qmail-qmtpd"}


def socket_path(home, name):
    return os.path.join(home, "queue", "lock", name)


def take_sendmutex(home):
    fd = os.open(os.path.join(home, "queue", "lock", "sendmutex"), os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    return fd


def make_listener(home, name, backlog):
    path = socket_path(home, name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        s.bind(path)
    finally:
        os.umask(old)
    if os.getuid() == 0 and not hier.is_single_user(home):
        pw = pwd.getpwnam(conf.USER_SEND)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    s.listen(backlog)
    return s


def start_logger(argv):
    """Run the logger as qmaill with a pipe on its stdin; our stdout and stderr go into it."""
    def as_qmaill():
        if os.getuid() == 0:
            pw = pwd.getpwnam(conf.USER_LOG)
            os.setgroups([pw.pw_gid])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, preexec_fn=as_qmaill)
    os.dup2(proc.stdin.fileno(), 1)
    os.dup2(proc.stdin.fileno(), 2)
    proc.stdin.close()
    return proc


def local_pool_size(home):
    return max(1, min(conf.SPAWN, control.read_int("concurrencylocal", 10, home)))


def roles(home, aliasempty, listeners):
    from engine import clean, lspawn, rspawn, send, todo
    paths = {name: socket_path(home, name) for name in SOCKETS}
    paths["local"], paths["remote"] = paths["lspawn"], paths["rspawn"]
    queue = os.path.join(home, "queue")
    separate = os.getuid() == 0 and not hier.is_single_user(home)
    as_user = (lambda u: u) if separate else (lambda u: None)
    return [
        Role("qmail-clean", lambda i: clean.run_clean(queue, listeners["clean"]), user=as_user(conf.USER_QUEUE)),
        Role("qmail-send", lambda i: send.run_send(home, paths, listeners["send"]),
             user=as_user(conf.USER_SEND), alarm=True),
        Role("qmail-todo", lambda i: todo.run_todo(home, paths["send"], paths["clean"]),
             user=as_user(conf.USER_SEND)),
        Role("qmail-lspawn", lambda i: lspawn.run_pool_worker(home, aliasempty, listeners["lspawn"]),
             count=lambda: local_pool_size(home)),
        Role("qmail-rspawn", lambda i: rspawn.run_rspawn(home, listeners["rspawn"]),
             user=as_user(conf.USER_REMOTE)),
    ] + ([Role("qmail-queue", lambda i: queued.run_service(home, listeners["queue"]),
               user=conf.USER_QUEUE)] if "queue" in listeners else [])


def listener_roles(home, separate):
    """SMTP and QMTP workers for the services that have a control/<service>listen file."""
    from engine import tcpserver
    out = []
    for service, program in NET_SERVICES.items():
        socks = tcpserver.bind_listeners(home, service)
        if not socks:
            continue
        limits = tcpserver.limits_for(home, service)
        role = Role(program, lambda i, s=service, k=socks, lim=limits: tcpserver.run_worker(home, s, i, k, lim),
                    count=lambda s=service: tcpserver.pool_size(home, s),
                    user=conf.USER_DAEMON if separate else None,
                    on_exit=lambda i, lim=limits: lim.reset_row(i),
                    socket_fds=tuple(k.fileno() for k in socks))
        out.append(role)
        log(f"status: {program} listening on " + " ".join(control.read_list(f"{service}listen", [], home)))
    return out


def keep_apart(queue_roles, net_roles, listeners):
    """No process keeps another role's sockets: the queue's processes never hold a port-25 socket
    and the network workers never hold the pools' sockets."""
    queue_fds = {s.fileno() for s in listeners.values()}
    net_fds = {fd for r in net_roles for fd in r.socket_fds}
    for r in queue_roles:
        r.close_fds = tuple(sorted(net_fds))
    for r in net_roles:
        r.close_fds = tuple(sorted(queue_fds | (net_fds - set(r.socket_fds))))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    home = conf.qmailhome()
    aliasempty = argv[0] if argv else "./Mailbox"
    if len(argv) > 1:
        start_logger(argv[1:])
    os.umask(0o077)
    mutex = take_sendmutex(home)
    if mutex is None:
        log("alert: cannot start: qmail-send is already running on this queue")
        return 111
    listeners = {name: make_listener(home, name, conf.SPAWN) for name in SOCKETS}
    separate = os.getuid() == 0 and not hier.is_single_user(home)
    if separate:  # the network servers (qmaild) cannot write the queue themselves
        try:
            listeners["queue"] = queued.make_listener(home, conf.SPAWN)
        except OSError as e:  # its name is taken: the servers use bin/qmail-queue instead
            log(f"alert: qmail-queue service not started: {e.strerror}")
    os.chdir(home)
    log(f"status: qmail-start in {home}, default delivery {aliasempty}")
    queue_roles, net_roles = roles(home, aliasempty, listeners), listener_roles(home, separate)
    from engine import pop3pool
    net_roles += [r for r in (pop3pool.role(home, aliasempty, separate),) if r]
    keep_apart(queue_roles, net_roles, listeners)
    compile_rules(home)
    return Arbiter(queue_roles + net_roles, on_hup=lambda: compile_rules(home)).run()


def compile_rules(home):
    """control/<service>rules into its cdb as the master's user: workers running as qmaild cannot."""
    from engine import tcpserver
    old = os.umask(0o022)  # the workers must be able to read the cdb
    try:
        for service in NET_SERVICES:
            tcpserver.compile_rules(home, service)
    finally:
        os.umask(old)


if __name__ == "__main__":
    sys.exit(main())
