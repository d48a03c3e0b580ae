"""preline: qmail's preline(1), a .qmail helper (preline.c).

`|preline [-frdFRD] command [arg ...]` feeds the command the message with
qmail-local's $UFLINE (`From ` line), $RPLINE (Return-Path) and $DTLINE
(Delivered-To) in front, for mbox-style programs such as procmail;
-f/-r/-d leave one out, -F/-R/-D put it back. Exits with the command's code.
"""

import getopt
import os
import signal
import subprocess
import sys

from engine import dotprog

FATAL = "preline: fatal: "
USAGE = "preline: usage: preline cmd [ arg ... ]"
FLAGS = {"-f": ("UFLINE", False), "-r": ("RPLINE", False), "-d": ("DTLINE", False),
         "-F": ("UFLINE", True), "-R": ("RPLINE", True), "-D": ("DTLINE", True)}


def prefix_lines(argv):
    """(the lines to write first, the command) from the options and the environment."""
    lines = {name: os.environ.get(name) for name in ("UFLINE", "RPLINE", "DTLINE")}
    if None in lines.values():
        dotprog.die(100, USAGE)
    try:
        opts, command = getopt.getopt(argv, "frdFRD")
    except getopt.GetoptError:
        dotprog.die(100, USAGE)
    wanted = dict.fromkeys(lines, True)
    for opt, _ in opts:
        name, on = FLAGS[opt]
        wanted[name] = on
    if not command:
        dotprog.die(100, USAGE)
    head = "".join(text for name, text in lines.items() if wanted[name])
    return head.encode("utf-8", "surrogateescape"), command


def main(argv=None):
    head, command = prefix_lines(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        child = subprocess.Popen(command, stdin=subprocess.PIPE)
    except OSError as e:
        dotprog.die(111 if dotprog.temporary(e) else 100, FATAL, f"unable to run {command[0]}: {e.strerror}")
    try:
        child.stdin.write(head)
        while data := os.read(0, dotprog.READ_SIZE):
            child.stdin.write(data)
        child.stdin.close()
    except OSError as e:  # also a command that stopped reading (EPIPE), as substdio_copy fails in C
        child.kill()
        child.wait()
        dotprog.die(111, FATAL, f"unable to copy input: {e.strerror}")
    code = child.wait()
    if code < 0:
        dotprog.die(111, FATAL, "child crashed")
    return code


if __name__ == "__main__":
    sys.exit(main())
