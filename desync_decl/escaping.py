"""Text made safe for a terminal: characters that would act instead of showing are
written as escapes (``\\x1b``, ``\\r``, ``\\u202e``).

Messages carry text from elsewhere: a store's error body, a registry's JSON, an
archive's file names. Printed raw, an ESC sequence clears the screen or moves the
cursor, a ``\\r`` or ``\\n`` starts a fake line ("All chunks verified OK"), a bidi
override reverses what is read. So every control character (C0, DEL, C1), every
invisible format character (bidi embeddings, overrides and isolates, zero-width
characters, byte-order mark), the Unicode line and paragraph separators and the
lone surrogates of undecodable file names are shown as Python writes them in a
string literal. Printable text, in any script, is kept as it is.
"""

from __future__ import annotations

import re
import unicodedata

_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r"}
# Candidates only (everything but printable ASCII): plain ASCII text is passed on untouched.
_CANDIDATES_IN_LINE = re.compile(r"[^\t\x20-\x7e]+")
_CANDIDATES_IN_TEXT = re.compile(r"[^\t\n\x20-\x7e]+")


def escape_line(text: str) -> str:
    """``text`` as one line: line breaks (``\\n``, ``\\r``, ...) are escaped too."""
    return _CANDIDATES_IN_LINE.sub(_escape_run, text)


def escape_text(text: str) -> str:
    """``text`` with its lines kept: only ``\\n`` and tabs reach the terminal as such."""
    return _CANDIDATES_IN_TEXT.sub(_escape_run, text)


def _escape_run(match: re.Match[str]) -> str:
    return "".join(_escape(c) for c in match.group())


def _escape(c: str) -> str:
    code = ord(c)
    if c in _NAMED:
        return _NAMED[c]
    if code > 0x9F and unicodedata.category(c) not in _HIDDEN_CATEGORIES:
        return c  # printable beyond ASCII (letters, symbols, CJK, emoji)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
