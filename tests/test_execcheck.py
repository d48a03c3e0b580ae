"""REJECTEXEC: signatures on the first body line of every MIME part."""

from engine.execcheck import has_executable

SIGS = ["TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA4fug4AtAnNIbgBTM0hVGhpcyBwcm9ncmFtIGNhbm5vdCBiZSBydW4gaW4gRE9TIG1vZGUu",
        "TVqQ*", "UEsDBBQ"]


def mime(parts, boundary="XyZ"):
    out = [f"Content-Type: multipart/mixed;\n\tboundary=\"{boundary}\"", "Subject: x", "",
           "This is a MIME message."]
    for headers, first in parts:
        out += [f"--{boundary}", *headers, "", first, "more"]
    out.append(f"--{boundary}--")
    return ("\n".join(out) + "\n").encode()


def test_attachment_first_line_matches_with_wildcard():
    msg = mime([(["Content-Type: text/plain"], "hello"),
                (["Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64"], "TVqQxxxx")])
    assert has_executable(msg, SIGS)


def test_only_the_first_body_line_counts():
    msg = mime([(["Content-Type: text/plain"], "hello\nTVqQAAMA")])
    assert not has_executable(msg, SIGS)


def test_plain_message_first_body_line():
    assert has_executable(b"Subject: x\n\nUEsDBBQAAAA\n", SIGS)
    assert not has_executable(b"Subject: x\n\nhello UEsDBBQ\n", SIGS)


def test_nested_rfc822_and_multipart():
    inner = mime([(["Content-Type: application/zip"], "UEsDBBQ")], boundary="inner")
    msg = mime([(["Content-Type: message/rfc822"], "")], boundary="outer")
    msg = msg.replace(b"\n\n\nmore", b"\n\n" + inner + b"more")
    assert has_executable(msg, SIGS)


def test_short_line_does_not_match_longer_signature():
    assert not has_executable(b"\nTVq\n", ["TVqQ"])


def test_wildcard_matches_the_line_end():
    """execcheck.c compares the line with its LF, so a `*` can stand for the line end."""
    assert has_executable(b"Subject: x\n\nMZ\n", ["MZ*"])
    assert not has_executable(b"Subject: x\n\nMZ\n", ["MZ**"])
