"""Header field names (qmail's hfield.c) and header/body splitting (headerbody.c).

known() names the fields qmail treats specially (case-insensitive, the name
may be followed by spaces or tabs before the colon); valid() is qmail's
test for a header line; headerbody() feeds a message's header fields
(continuation lines joined) and then its body to callbacks, exactly where
qmail decides the header ends.
"""

NAMES = (
    "sender", "from", "reply-to", "to", "cc", "bcc", "date", "message-id", "subject",
    "resent-sender", "resent-from", "resent-reply-to", "resent-to", "resent-cc", "resent-bcc",
    "resent-date", "resent-message-id", "return-receipt-to", "errors-to", "apparently-to",
    "received", "return-path", "delivered-to", "content-length", "content-type",
    "content-transfer-encoding", "notice-requested-upon-delivery-to", "mail-followup-to",
)
(SENDER, FROM, REPLYTO, TO, CC, BCC, DATE, MESSAGEID, SUBJECT,
 R_SENDER, R_FROM, R_REPLYTO, R_TO, R_CC, R_BCC, R_DATE, R_MESSAGEID,
 RETURNRECEIPTTO, ERRORSTO, APPARENTLYTO, RECEIVED, RETURNPATH, DELIVEREDTO,
 CONTENTLENGTH, CONTENTTYPE, CONTENTTRANSFERENCODING, NOTICEREQUESTEDUPONDELIVERYTO,
 MAILFOLLOWUPTO) = range(1, len(NAMES) + 1)

_BY_NAME = {name.encode(): number for number, name in enumerate(NAMES, 1)}


def known(line):
    """The field's number (SENDER ... MAILFOLLOWUPTO), 0 if qmail has no special name for it."""
    colon = line.find(b":")
    if colon < 0:
        return 0
    name = line[:colon].rstrip(b" \t")
    if b" " in name or b"\t" in name:
        return 0
    return _BY_NAME.get(name.lower(), 0)


def valid(line):
    """A field name before a colon: no controls, spaces or 8-bit (trailing blanks allowed)."""
    colon = line.find(b":")
    if colon < 0:
        return False
    name = line[:colon].rstrip(b" \t")
    return bool(name) and all(32 < ch < 127 for ch in name)


def _lines(stream):
    """Lines of a binary stream, each ending in a newline (one is added to a last partial line)."""
    for line in stream:
        yield line if line.endswith(b"\n") else line + b"\n"


def headerbody(stream, field, header_done, body):
    """qmail's headerbody(): field(line) per header field, header_done() once, body(data) for the rest.

    The header ends at an empty line (passed to body), or before the first
    line that is not a field (body gets a "\\n" first, so a separator
    appears), or at end of input. A leading "From " line becomes an
    "MBOX-Line: From ..." field.
    """
    lines = _lines(stream)
    current = None
    for line in lines:
        if current is not None:
            if line[:1] in (b" ", b"\t"):
                current += line
                continue
            field(current)
        if line == b"\n":
            header_done()
            body(line)
            break
        if line.startswith(b"From "):
            current = b"MBOX-Line: " + line
        elif valid(line):
            current = line
        else:
            header_done()
            body(b"\n")
            body(line)
            break
    else:
        if current is not None:
            field(current)
        header_done()
        return
    _copy_body(stream, body)


def _copy_body(stream, body):
    """The rest of the input in large blocks; a last line without a newline gets one, as qmail's getln does."""
    last = b"\n"
    while block := stream.read(65536):
        body(block)
        last = block
    if not last.endswith(b"\n"):
        body(b"\n")
