"""qmail's date822fmt: the RFC 822 date qmail writes in Received, Date and bounce headers.

Always UTC, written as `-0000`, the day without a leading zero:
`28 Nov 2026 21:30:05 -0000`.
"""

import time

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def date822(when=None):
    t = time.gmtime(time.time() if when is None else when)
    return (f"{t.tm_mday} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} -0000")
