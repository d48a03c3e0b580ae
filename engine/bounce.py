"""Bounces in qmail-send's QSBMF format (qmail-send.c addbounce, injectbounce, senderadd).

Failure reports accumulate in queue/bounce/<id> as `<recipient>:` blocks
(failure_record). When a message has no undelivered recipients left, the
bounce is composed from them (compose): to the original sender, or, for a
message whose sender was `<>`, a double bounce from `#@[]` to
doublebounceto@doublebouncehost; a bounce of a double bounce (sender
`#@[]`) is a triple bounce and is dropped.
"""

from dataclasses import dataclass

from engine.date822 import date822
from engine.quote import quote2, quote_box

DOUBLE_BOUNCE_SENDER = b"#@[]"
STRIPPED = b"\n\n--- End of message stripped.\n"


@dataclass(frozen=True)
class Settings:
    bouncefrom: bytes = b"MAILER-DAEMON"
    bouncehost: bytes = b"bouncehost"
    doublebounce: bytes = b"postmaster@bouncehost"  # doublebounceto@doublebouncehost
    custom: bytes = b""                             # control/custombouncetext, raw
    maxbytes: int = 0                               # control/bouncemaxbytes; 0 = whole message


def _lookup(vdoms, key: bytes):
    return vdoms.get(key.decode("utf-8", "surrogateescape"))


def strip_vdom_prepend(recipient: bytes, vdoms) -> bytes:
    """Undo the virtualdomains `prepend-` so the bounce names the address the sender used."""
    at = recipient.rfind(b"@")
    if at < 0:
        return recipient
    domain = recipient[at + 1:]
    for i in range(len(domain) + 1):
        if i == 0 or i == len(domain) or domain[i:i + 1] == b".":
            prepend = _lookup(vdoms, domain[i:])
            if prepend is not None:
                prepend = prepend.encode("utf-8", "surrogateescape")
                if prepend and recipient.startswith(prepend + b"-"):
                    return recipient[len(prepend) + 1:]
                break
    return recipient


def failure_record(recipient: bytes, report: bytes, vdoms) -> bytes:
    """One `<recipient>:` block for bounce/<id>; blank lines inside the report become `/`."""
    text = bytearray(b"<" + strip_vdom_prepend(recipient, vdoms).replace(b"\n", b"_") + b">:\n")
    text += report
    if report and not report.endswith(b"\n"):
        text += b"\n"
    for pos in range(len(text) - 2, 0, -1):
        if text[pos] == 0x0A and text[pos - 1] == 0x0A:
            text[pos] = ord("/")
    return bytes(text + b"\n")


def owner_sender(sender: bytes, recipient: bytes) -> bytes:
    """senderadd: a VERP owner sender `owner-@host-@[]` becomes `owner-box=host@host` per recipient."""
    if sender.endswith(b"-@[]"):
        j = sender.rfind(b"@", 0, len(sender) - 4)
        k = recipient.rfind(b"@")
        if k >= 0 and j >= 0 and j + 5 <= len(sender):
            return (sender[:j] + recipient[:k] + b"=" + recipient[k + 1:] + b"@" +
                    sender[j + 1:len(sender) - 4])
    return sender


def bounce_sender_of(sender: bytes) -> bytes:
    """injectbounce: `owner-@host-@[]` is reduced to `owner-@host` before bouncing to it."""
    if len(sender) >= 5 and sender.endswith(b"-@[]"):
        return sender[:-4]
    return sender


def is_triple_bounce(sender: bytes) -> bool:
    return bounce_sender_of(sender) == DOUBLE_BOUNCE_SENDER


def compose(sender: bytes, records: bytes, message: bytes, settings: Settings, when=None):
    """(envelope sender, recipient, text) of the bounce for `sender`; None for a triple bounce.

    `records` is the content of bounce/<id>; `message` the mess/ file as queued.
    """
    sender = bounce_sender_of(sender)
    if sender == DOUBLE_BOUNCE_SENDER:
        return None
    double = not sender
    env_sender, recipient = (DOUBLE_BOUNCE_SENDER, settings.doublebounce) if double else (b"", sender)
    out = [b"Date: ", date822(when).encode(), b"\n",
           b"From: ", quote_box(settings.bouncefrom), b"@", settings.bouncehost, b"\n",
           b"To: ", quote2(recipient), b"\n",
           b"Subject: failure notice\n\n",
           b"Hi. This is the qmail-send program at ", settings.bouncehost, b".\n"]
    if double:
        out.append(b"I tried to deliver a bounce message to this address, but the bounce bounced!\n")
    else:
        out.append(b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
                   b"This is a permanent error; I've given up. Sorry it didn't work out.\n")
    if settings.custom:
        out.append(settings.custom)
        if not settings.custom.endswith(b"\n"):
            out.append(b"\n")
    out += [b"\n", records]
    out.append(b"--- Below this line is the original bounce.\n\n" if double
               else b"--- Below this line is a copy of the message.\n\n")
    out += [b"Return-Path: <", quote2(sender), b">\n"]
    if settings.maxbytes and len(message) >= settings.maxbytes:
        out += [message[:settings.maxbytes], STRIPPED]
    else:
        out.append(message)
    return env_sender, recipient, b"".join(out)
