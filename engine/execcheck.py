"""qmail-ldap's attachment signature check (execcheck.c; REJECTEXEC + control/signatures).

Walks the message's header and MIME structure (Content-Type with its
`boundary=` parameters kept as a stack, `message/rfc822` parts descended
into) and compares the first body line of every part with each signature:
a literal prefix where `*` matches any one byte. A hit rejects the message
after DATA with 552. Lines are considered up to 1024 bytes, as in the C
code. Difference: nested boundaries deeper than two levels are tracked
correctly (the C code loses them).
"""

LINE_MAX = 1024


def signature_matches(line, sig):
    if len(sig) > len(line):
        return False
    return all(s == 0x2A or s == c for s, c in zip(sig, line))


def content_tokens(value):
    """Content-Type tokens split on space, tab and `;`, quotes removed, comments dropped."""
    tokens, cur, quoted, comment = [], bytearray(), False, False
    for ch in value:
        if ch in b" \t;" and not quoted:
            if cur:
                tokens.append(bytes(cur))
            cur = bytearray()
        elif ch == 0x22:
            quoted = not quoted
        elif ch == 0x28 and not quoted:
            comment = True
        elif ch == 0x29 and not quoted:
            comment = False
        elif not comment or quoted:
            cur.append(ch)
    if cur:
        tokens.append(bytes(cur))
    return tokens


def has_executable(message, signatures):
    """True when the first body line of any MIME part starts with one of `signatures`."""
    sigs = [s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s for s in signatures]
    boundaries = []
    in_header, first_body_line = True, False
    content, in_content, rfc822 = b"", False, False
    lines = message.split(b"\n")
    for index, raw in enumerate(lines):
        line = raw[:LINE_MAX]
        if in_header:
            if line == b"":
                in_header, first_body_line = False, True
                for tok in content_tokens(content):
                    if tok[:9].lower() == b"boundary=":
                        boundaries.append(b"--" + tok[9:])
                    elif tok.lower() == b"message/rfc822":
                        rfc822 = True
                content, in_content = b"", False
                if rfc822:
                    in_header, first_body_line, rfc822 = True, False, False
            elif line[:1] in (b" ", b"\t"):
                if in_content:
                    content += line
            elif line[:13].lower() == b"content-type:":
                content, in_content = line[13:], True
            else:
                in_content = False
            continue
        if boundaries and line.startswith(boundaries[-1]):
            if line[len(boundaries[-1]):len(boundaries[-1]) + 2] == b"--":
                boundaries.pop()
                first_body_line = False
            else:
                in_header = True
            continue
        if first_body_line:
            # the C code compares the line with its LF (within the 1024 bytes), so `*` can match the LF
            full = (raw + b"\n")[:LINE_MAX] if index < len(lines) - 1 else line
            if any(signature_matches(full, s) for s in sigs):
                return True
            first_body_line = False
    return False
