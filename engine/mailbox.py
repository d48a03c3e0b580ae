"""qmail-local's mailbox delivery failures: the exit code (100 or 111) and the exact reply text.

Shared by engine.maildir (Maildir and mbox writing) and engine.quota
(Maildir++), so a caller such as qmail-local catches one exception type.
"""

import errno

TEMP, PERM = 111, 100

# qmail's error_temp(): system errors that make a failure temporary rather than "not there"
TEMP_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EINTR", "ENOMEM", "ETXTBSY", "EIO", "ETIMEDOUT", "EWOULDBLOCK", "EAGAIN", "EBUSY", "ECONNABORTED",
    "ECONNREFUSED", "ECONNRESET", "EDEADLK", "EDQUOT", "EFBIG", "EHOSTDOWN", "EHOSTUNREACH", "EMFILE",
    "ENETDOWN", "ENETRESET", "ENETUNREACH", "ENFILE", "ENOBUFS", "ENOLCK", "ENOSPC", "ESTALE",
    "ETOOMANYREFS", "EUSERS"))

CHDIR_MAILDIR = "Unable to chdir to maildir. (#4.2.1)"
READ_MESSAGE = "Unable to read message. (#4.3.0)"
TEMP_MAILDIR = "Temporary error on maildir delivery. (#4.3.0)"
SLOW_LOCK = "File has been locked for 30 seconds straight. (#4.3.0)"
MAILDIR_CORRUPT = "The maildir '{}' seems to be corrupted. (#4.2.1)"
MAILDIR_CREATE = "Unable to create maildir '{}' (#4.3.0)"
MBOX_OPEN = "Unable to open {}: {}. (#4.2.1)"
MBOX_WRITE = "Unable to write {}: {}. (#4.3.0)"
MBOX_READ = "Unable to read message: {}. (#4.3.0)"
OVER_QUOTA = "The users {} is over the allowed quota (size). (#5.2.2)"
QUOTA_RACE = "Temporary race condition while calculating quota. (#4.3.0)"
QUOTA_RERACE = "Temporary race condition while recalculating quota. (#4.3.0)"
QUOTA_RECURSIVE = "Unable to calc quota: recursive maildir++ (QUOTA #1.1.1)"
QUOTA_OPEN = "Unable to open maildirsize: {} (QUOTA #1.5.1)"


class MailboxError(Exception):
    """A failed mailbox delivery: .code (100 permanent, 111 temporary), .text (qmail-local's reply),
    .detail (the path and system error behind it, for the log)."""

    def __init__(self, code, text, detail=""):
        super().__init__(text)
        self.code = code
        self.text = text
        self.detail = detail


class QuotaExceeded(MailboxError):
    """Over the Maildir++ or mbox quota (100). qmail-local runs qmail-quotawarn before bouncing."""

    def __init__(self, kind, percent):
        super().__init__(PERM, OVER_QUOTA.format(kind))
        self.percent = percent


def temp(text, detail=""):
    return MailboxError(TEMP, text, detail)
