"""RFC 822 address tokens (qmail's token822.c), as qmail-inject uses them.

A token is a (type, bytes) pair. parse() splits a header line into tokens;
addrlist() walks an address list right to left (how qmail reads RFC 822
lists), hands each address to a callback as a *reversed* token list the
callback may rewrite in place, and returns the rebuilt field; unparse()
prints tokens back, folding address lists at commas to fit `linelen`;
unquote() flattens an address to the envelope form. (quote.c lives in
engine.quote.)
"""

ATOM, QUOTE, LITERAL, COMMENT, LEFT, RIGHT, AT, COMMA, SEMI, COLON, DOT = range(1, 12)

_PUNCT = {ord("."): DOT, ord(","): COMMA, ord("@"): AT, ord("<"): LEFT,
          ord(">"): RIGHT, ord(":"): COLON, ord(";"): SEMI}
_PUNCT_TEXT = {DOT: b".", COMMA: b",", AT: b"@", LEFT: b"<", RIGHT: b">", COLON: b":", SEMI: b";"}
_SPACE = frozenset(b" \t\r\n")
_NOT_ATOM = frozenset(b" \t\r\n([\"<>;:@,.")
_CLOSER = {ord("("): ord(")"), ord('"'): ord('"'), ord("["): ord("]")}
_KIND = {ord("("): COMMENT, ord('"'): QUOTE, ord("["): LITERAL}
_WORDS = (ATOM, QUOTE, LITERAL, COMMENT)
_ESCAPED = frozenset(b'"[]()\\\r\n')
_WRAP = {QUOTE: (b'"', b'"'), LITERAL: (b"[", b"]"), COMMENT: (b"(", b")"), ATOM: (b"", b"")}


class ParseError(ValueError):
    """The text is not a token sequence (unbalanced quote, comment or literal, stray ')' or ']')."""


def parse(s):
    """Tokens of `s` (bytes); ParseError when it cannot be tokenized."""
    tokens = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch in _PUNCT:
            tokens.append((_PUNCT[ch], b""))
            i += 1
        elif ch in _SPACE:
            i += 1
        elif ch in (ord(")"), ord("]")):
            raise ParseError(s)
        elif ch in _KIND:
            text, i = _bracketed(s, i)
            tokens.append((_KIND[ch], text))
        else:
            text, i = _atom(s, i)
            tokens.append((QUOTE if _needs_quote_type(text) else ATOM, text))
    return tokens


def _bracketed(s, i):
    """A comment, quoted string or domain literal starting at s[i]; backslash escapes.

    Comments nest: inner parentheses count levels but are not kept (token822.c).
    """
    opener, closer = s[i], _CLOSER[s[i]]
    nests = opener == ord("(")
    level, out, n = 1, bytearray(), len(s)
    while level:
        i += 1
        if i >= n:
            raise ParseError(s)
        ch = s[i]
        if nests and ch == opener:
            level += 1
        elif ch == closer:
            level -= 1
        else:
            if ch == ord("\\"):
                i += 1
                if i >= n:
                    raise ParseError(s)
                ch = s[i]
            out.append(ch)
    return bytes(out), i + 1


def _atom(s, i):
    out, n = bytearray(), len(s)
    while True:
        if s[i] == ord("\\"):
            i += 1
            if i >= n:
                break
        out.append(s[i])
        i += 1
        if i >= n or s[i] in _NOT_ATOM:
            break
    return bytes(out), i


def _needs_quote_type(text):
    """token822.c atomcheck: an atom holding controls, 8-bit or ) ] \\ prints as a quoted string."""
    return any(ch < 32 or ch > 126 or ch in b")]\\" for ch in text)


def _needspace(t1, t2):
    if not t1:
        return False
    if t1 in (COLON, COMMA) or t2 == LEFT:
        return True
    return t1 in _WORDS and t2 in _WORDS


def unparse(tokens, linelen):
    """The tokens as header text ending in a newline; folds after commas past `linelen` columns."""
    out = bytearray()
    fold = [None, 0]  # [position of the pending "\n " break or None, start of the current line]
    last = 0
    for kind, text in tokens:
        if _needspace(last, kind):
            out += b" "
        last = kind
        if kind == COMMA:
            out += b","
            _fold(out, fold, linelen)
        elif kind in _PUNCT_TEXT:
            out += _PUNCT_TEXT[kind]
        else:
            left, right = _WRAP[kind]
            out += left
            for ch in text:
                if ch in _ESCAPED:
                    out.append(ord("\\"))
                out.append(ch)
            out += right
    _fold(out, fold, linelen)
    del out[-1]
    return bytes(out)


def _fold(out, fold, linelen):
    """token822.c NSUW: put a tentative break here; drop the previous one if the line still fits."""
    pending, lineb = fold
    if pending is not None and (not linelen or len(out) - lineb <= linelen):
        del out[pending:pending + 2]
        out += b"\n "
        fold[0] = len(out) - 2
    else:
        if pending is not None:
            fold[1] = pending + 1
        fold[0] = len(out)
        out += b"\n "


def unquote(tokens):
    """The address as the envelope carries it: quotes dropped, comments dropped, literals bracketed."""
    out = bytearray()
    for kind, text in tokens:
        if kind in _PUNCT_TEXT:
            out += _PUNCT_TEXT[kind]
        elif kind == LITERAL:
            out += b"[" + text + b"]"
        elif kind in (ATOM, QUOTE):
            out += text
    return bytes(out)


def addrlist(tokens, callback):
    """Rewrite every address of a header field's tokens (name and colon first) through `callback`.

    `callback(addr)` gets each address as a reversed token list and edits it in
    place. Returns the new token list; ParseError for a malformed list
    (unbalanced group or angle brackets).
    """
    out, addr = [], []
    ingroup, wordok = False, True
    begin = 2
    t = len(tokens) - 1

    def flush():
        if addr:
            callback(addr)
            out.extend(addr)
            addr.clear()
            return True
        return False

    while t >= begin:
        kind = tokens[t][0]
        if kind == SEMI:
            if flush():
                out.append((COMMA, b""))
            if ingroup:
                raise ParseError(tokens)
            ingroup, wordok = True, True
        elif kind == COLON:
            flush()
            if not ingroup:
                raise ParseError(tokens)
            ingroup = False
            while t >= begin and tokens[t][0] != COMMA:
                out.append(tokens[t])
                t -= 1
            if t >= begin:
                out.append(tokens[t])
                t -= 1
            wordok = True
            continue
        elif kind == RIGHT:
            if flush():
                out.append((COMMA, b""))
            out.append(tokens[t])
            t -= 1
            while t >= begin and tokens[t][0] != LEFT:
                addr.append(tokens[t])
                t -= 1
            callback(addr)  # even an empty <> is an address
            out.extend(addr)
            addr.clear()
            if t < begin:
                raise ParseError(tokens)
            out.append(tokens[t])
            t -= 1
            while t >= begin and tokens[t][0] in (COMMENT, ATOM, QUOTE, AT, DOT):
                out.append(tokens[t])
                t -= 1
            wordok = False
            continue
        elif kind in (ATOM, QUOTE, LITERAL):
            if not wordok and flush():
                out.append((COMMA, b""))
            wordok = False
            addr.append(tokens[t])
            t -= 1
            continue
        elif kind == COMMENT:
            pass  # lexically a space: goes to the output, leaves wordok alone
        elif kind == COMMA:
            flush()
            wordok = True
        else:  # AT, DOT, LEFT
            wordok = True
            addr.append(tokens[t])
            t -= 1
            continue
        out.append(tokens[t])
        t -= 1
    flush()
    out.extend(reversed(tokens[:min(len(tokens), begin)]))
    out.reverse()
    return out
