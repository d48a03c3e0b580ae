"""qmail-showctl: what every control file says, generated from engine.control.REGISTRY.

Output as qmail-ldap's qmail-showctl.c: the build settings (qmail home,
conf-break, conf-patrn, conf-spawn, conf-split, user and group ids), "me"
and "ldapserver", then one paragraph per control file:

    name: <pre><value><post>.              a line or number that is set
    name: (Default.) <pre><default><post>.  one that is missing
    name:                                   a list: one line per entry
    <pre><entry><post>

then "Now the qmail-ldap specific files:", pyqmail-ldap's listener files
(control/smtplisten ..., which replace tcpserver's command line), the
users/ files, and one line
for every other file in control/: "No longer used, please remove." for
qmail-ldap's obsolete files, "I have no idea what this file does." for the
rest. Unprintable characters are shown as '?'. Exit 0; 111 when the qmail
home or its control/ cannot be opened.

Differences from qmail-ldap's program, all so that it tells the truth: the
defaults shown are the ones the programs use (timeoutremote and
timeoutsmtpd 120, a missing rcpthosts is not an open relay), every file of
the registry is listed (tls*, smtpcert, signatures, locals.cdb ...), and a
file that cannot be parsed says why after "Oops! Trouble reading this file.".
"""

import os
import sys

from engine import conf, control, hier


def safe(text):
    """qmail-showctl's safeput: every character outside printable ASCII becomes '?'."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    return "".join(chr(c) if 32 <= c <= 126 else "?" for c in text)


# --- header -------------------------------------------------------------------------------

def _ids(home):
    """(user ids, group ids) in qmail-showctl's order; '?' for an id that does not exist."""
    try:
        single = hier.is_single_user(home)
    except OSError:
        single = False
    order = (conf.USER_ALIAS, conf.USER_DAEMON, conf.USER_LOG, conf.USER_OWNER,
             conf.USER_PASSWD, conf.USER_QUEUE, conf.USER_REMOTE, conf.USER_SEND)
    uids = [_id(home, user, conf.USER_GROUP.get(user, conf.GROUP_QMAIL), single, 0) for user in order]
    gids = [_id(home, member, group, single, 1)
            for member, group in ((conf.USER_ALIAS, conf.GROUP_NOFILES), (conf.USER_QUEUE, conf.GROUP_QMAIL))]
    return uids, gids


def _id(home, user, group, single, which):
    try:
        return str(hier.ids(home, user, group, single)[which])
    except (KeyError, OSError):
        return "?"


def header(home):
    uids, gids = _ids(home)
    return [f"qmail home directory: {home}.",
            f"user-ext delimiter: {conf.BREAK}.",
            f"paternalism (in decimal): {conf.PATTERN}.",
            f"silent concurrency limit: {conf.SPAWN}.",
            f"subdirectory split: {conf.SPLIT}.",
            f"user ids: {', '.join(uids)}.",
            f"group ids: {', '.join(gids)}."]


# --- one paragraph per control file -------------------------------------------------------

class Context:
    """What the paragraphs need besides the file itself."""

    def __init__(self, home):
        self.home = home
        self.me = control.me(home)


def _fill(text, ctx):
    return text.replace("{me}", ctx.me or "")


def _shown_default(entry, ctx):
    """A missing file's value as shown: control/me for me-derived lines, else `shown` or the default."""
    d = control.default(entry.name, ctx.home)
    if isinstance(entry.default, control.Derived) and d:
        return str(d)
    if entry.shown is not None:
        return entry.shown
    return "" if d is None else str(d)


def _leaves_default(entry, ctx):
    """Missing, or a number without a leading digit: qmail-showctl says (Default.) for both."""
    p = entry.path(ctx.home)
    if not os.path.exists(p):
        return True
    return entry.type in ("int", "ulong") and not control.has_number(p)


def show_scalar(entry, ctx):
    """line, int, ulong: one line."""
    pre, post = _fill(entry.pre, ctx), entry.post
    if _leaves_default(entry, ctx):
        return [f"(Default.) {pre}{safe(_shown_default(entry, ctx))}{post}."]
    return [f"{pre}{safe(str(control.value(entry.name, ctx.home)))}{post}."]


def show_lines(entry, ctx, lines):
    if lines is None:
        return [f"(Default.) {_fill(entry.shown or '', ctx)}"]
    return [""] + [f"{_fill(entry.pre, ctx)}{safe(line)}{entry.post}" for line in lines]


def show_list(entry, ctx):
    if not os.path.exists(entry.path(ctx.home)):
        return show_lines(entry, ctx, None)
    return show_lines(entry, ctx, control.value(entry.name, ctx.home))


def show_raw(entry, ctx):
    """Text files are shown line by line like lists (qmail-showctl reads them with control_readfile)."""
    p = entry.path(ctx.home)
    if not os.path.exists(p):
        return show_lines(entry, ctx, None)
    if not entry.dump:
        return ["Present."]
    return show_lines(entry, ctx, control._list(p, []))


def show_cdb(entry, ctx):
    """Whether the cdb exists and is newer than the file it is built from."""
    cdb_path = entry.path(ctx.home)
    source = control.REGISTRY[entry.source].path(ctx.home) if entry.source else None
    cdb_name, source_name = entry.name, entry.source
    has_cdb = os.path.exists(cdb_path)
    has_source = source is not None and os.path.exists(source)
    if not has_cdb:
        if has_source:
            return [f"Oops! {source_name} exists but {cdb_name} doesn't."]
        return [f"(Default.) {entry.shown}"]
    if source is None:
        return ["Present."]
    if not has_source:
        return [f"Oops! {cdb_name} exists but {source_name} doesn't."]
    if os.stat(source).st_mtime > os.stat(cdb_path).st_mtime:
        return [f"Oops! {cdb_name} is older than {source_name}."]
    return ["Modified recently enough; hopefully up to date."]


SHOW = {"line": show_scalar, "int": show_scalar, "ulong": show_scalar,
        "list": show_list, "raw": show_raw, "cdb": show_cdb}


def paragraph(entry, ctx):
    """The blank line, "name: " and what the file says."""
    try:
        body = SHOW[entry.type](entry, ctx)
    except control.ControlError as e:
        body = [f"Oops! Trouble reading this file. {e}"]
    return ["", f"{entry.name}: {body[0]}"] + body[1:]


def section(name, ctx):
    out = []
    for entry in control.REGISTRY.values():
        if entry.section == name:
            out += paragraph(entry, ctx)
    return out


def others(control_dir):
    """Files in control/ the registry does not know: obsolete ones, then the unknown."""
    out = []
    for name in sorted(os.listdir(control_dir)):
        if name in control.REGISTRY:
            continue
        if name in control.OBSOLETE:
            out.append(f"{name}: No longer used, please remove.")
        else:
            out.append(f"{name}: I have no idea what this file does.")
    return out


def report(home):
    """Every output line, or raises OSError when control/ cannot be listed."""
    ctx = Context(home)
    ldapserver = control.read_list("ldapserver", [], home)
    out = header(home)
    out += [f"me: My name is {ctx.me or ''}", f"ldapserver: My ldap server is {' '.join(ldapserver)}", ""]
    out += section("qmail", ctx)
    out += ["", "", "", "Now the qmail-ldap specific files:"]
    out += section("ldap", ctx)
    out += ["", "", "", "Now the pyqmail-ldap listener files (tcpserver's role):"]
    out += section("pyqmail", ctx)
    out += ["", "", "", "Now the users/ files:"]
    out += section("users", ctx)
    return out + [""] + others(control.control_dir(home))


def main(argv=None):
    home = conf.qmailhome()
    try:
        lines = report(home)
    except OSError as e:
        print(f"Oops! Unable to open {home}/control: {e.strerror}.")
        return 111
    except control.ControlError as e:
        print(f"Oops! {e}")
        return 111
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
