"""The MIME encodings the message builder writes by hand (RFC 2045, 2047, 5322).

The stdlib ``email`` package does all of this through a general object model that costs
over a millisecond a message. These functions do only what an outgoing campaign message
needs, and lean on C-implemented ``bytes``/``re``/``binascii`` operations instead of
per-character Python loops, because they run once per recipient.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import cast

SOFT_LINE_LIMIT = 78  # RFC 5322 2.1.1: a line SHOULD be at most 78 characters
HARD_LINE_LIMIT = 998  # ... and MUST be at most 998

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# An encoded word is at most 75 characters (RFC 2047 2); "=?UTF-8?B?" + "?=" is 12 of
# them. 45 bytes make 60 base64 characters: a 72-column word, 73 with the folding space.
_WORD_OVERHEAD = 12
_CONTINUATION_WORD_BYTES = 45

_SIMPLE_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*\Z")
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
_PRINTABLE_ASCII = re.compile(r"[ -~]*\Z")

_ASCII_BYTES = bytes(range(128))
_7BIT_SAFE_BYTES = bytes([9, 10, *range(32, 127)])
_QP_SAFE_BYTES = _7BIT_SAFE_BYTES
_BYTE = [bytes((value,)) for value in range(256)]
_QP_ESCAPE = [b"=%02X" % value for value in range(256)]
# One encoded line's soft-broken pieces: 73 bytes plus up to 2 more that are not "=",
# so an "=XX" escape is never split (its digits are never "="), while more follows.
# DOTALL matters: on CPython "." with DOTALL is several times faster than without.
_QP_SOFT_PIECE = re.compile(rb".{73}[^=]{0,2}+(?=.)|.+", re.DOTALL)
_TRAILING_WHITESPACE = (b" ", b"\t")
# Encoded lines by their raw bytes. QP is line-local, and most lines of a campaign are the
# same for every recipient (only those holding a personal link or name differ), so a line
# is encoded once and reused; the table is bounded by clearing it when full.
_QP_LINES: dict[bytes, bytes] = {}
_QP_LINES_MAX = 8192
_BASE64_LINE = re.compile(rb".{1,76}", re.DOTALL)


class WireReady(bytes):
    """Message bytes that need no rewriting for SMTP: CRLF line breaks only, a final
    CRLF, and no line starting with ``.`` (so no dot-stuffing). The builder returns this
    type, so the SMTP client can skip scanning every message for bare line breaks and
    leading dots; anything derived from it (a slice, a concatenation) is plain ``bytes``
    again and gets scanned."""

    __slots__ = ()


def format_date(moment: datetime) -> str:
    """RFC 5322 3.3 date-time in the datetime's own offset; naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset()
    minutes = 0 if offset is None else int(offset.total_seconds()) // 60
    # Keyed by the offset too: datetimes in different zones compare equal.
    return _format_date(moment.replace(microsecond=0, tzinfo=None), minutes)


@lru_cache(maxsize=64)  # a send run stamps many messages within the same second
def _format_date(local: datetime, offset_minutes: int) -> str:
    sign = "-" if offset_minutes < 0 else "+"
    minutes = abs(offset_minutes)
    return (
        f"{_DAYS[local.weekday()]}, {local.day:02d} {_MONTHS[local.month - 1]} "
        f"{local.year:04d} {local.hour:02d}:{local.minute:02d}:{local.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


def encoded_words(value: str, first_room: int) -> list[str]:
    """``value`` as RFC 2047 B-encoded UTF-8 words, never splitting a character.

    ``first_room`` is the number of columns left on the first line; later words fit a
    continuation line. Decoders join adjacent encoded words without the space between.
    """
    data = value.encode("utf-8")
    size = len(data)
    budget = min(_CONTINUATION_WORD_BYTES, max(6, (first_room - _WORD_OVERHEAD) // 4 * 3))
    words: list[str] = []
    start = 0
    while start < size:
        end = start + budget
        if end >= size:
            end = size
        else:
            while data[end] & 0xC0 == 0x80:  # back off to the start of a UTF-8 sequence
                end -= 1
        encoded = binascii.b2a_base64(data[start:end], newline=False).decode("ascii")
        words.append(f"=?UTF-8?B?{encoded}?=")
        start = end
        budget = _CONTINUATION_WORD_BYTES
    return words


def _fold_words(words: list[str], first_column: int) -> str | None:
    """Greedy folding at spaces; ``None`` when a single word is too long for a line
    (the caller then uses encoded words, which can be split anywhere)."""
    lines: list[str] = []
    current = words[0]
    width = first_column + len(current)
    for word in words[1:]:
        if width + 1 + len(word) <= SOFT_LINE_LIMIT:
            current = f"{current} {word}"
            width += 1 + len(word)
        else:
            lines.append(current)
            current = word
            width = 1 + len(word)
    lines.append(current)
    widths = [first_column + len(lines[0]), *(1 + len(line) for line in lines[1:])]
    if max(widths) > SOFT_LINE_LIMIT:
        return None
    return "\r\n ".join(lines)


def unstructured(value: str, first_column: int) -> str:
    """An unstructured header value (Subject, extra headers), folded to fit.

    Plain ASCII words stay readable; anything a decoder could misread (non-ASCII,
    control characters, runs of spaces, leading or trailing space, a literal ``=?``)
    is B-encoded so it round-trips exactly.
    """
    if not value:
        return ""
    if "=?" not in value and _SIMPLE_TEXT.match(value):
        if first_column + len(value) <= SOFT_LINE_LIMIT:
            return value
        folded = _fold_words(value.split(" "), first_column)
        if folded is not None:
            return folded
    return "\r\n ".join(encoded_words(value, SOFT_LINE_LIMIT - first_column))


def display_name(name: str, first_column: int) -> str:
    """A display-name phrase: bare atoms, a quoted string, or encoded words."""
    if "=?" not in name:
        if _ATOM_PHRASE.match(name):
            folded = _fold_words(name.split(" "), first_column)
            if folded is not None:
                return folded
        elif _PRINTABLE_ASCII.match(name):
            quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if first_column + len(quoted) <= SOFT_LINE_LIMIT:
                return quoted
    return "\r\n ".join(encoded_words(name, SOFT_LINE_LIMIT - first_column))


def mailbox(name: str, address: str, first_column: int) -> str:
    """``Name <address>``, or the bare address without a name; ``address`` is ASCII."""
    if not name:
        return address
    phrase = display_name(name, first_column)
    newline = phrase.rfind("\n")
    last_width = len(phrase) + first_column if newline < 0 else len(phrase) - newline - 1
    if last_width + len(address) + 3 <= SOFT_LINE_LIMIT:
        return f"{phrase} <{address}>"
    return f"{phrase}\r\n <{address}>"


def quoted_printable(data: bytes, mark: Marked | None = None) -> bytes:
    """RFC 2045 6.7 encoding of LF-separated text, returned with CRLF line breaks and
    no line starting with ``.`` (written ``=2E`` there, which decodes the same).

    Lines seen before come from a table; the new ones are escaped together with
    single-byte ``bytes.replace`` passes (C loops) and split by one regex ``findall``
    per over-long line.

    With ``mark``, ``data`` holds ``mark.mark`` where the text has ``mark.value`` (see
    :class:`Marked`), and the result is the encoding of the text.
    """
    lines = data.split(b"\n")
    known = _QP_LINES.get
    encoded = [known(line) for line in lines]
    if None in encoded:
        missing = [index for index, line in enumerate(encoded) if line is None]
        if mark is not None:
            missing = _fill_marked(lines, encoded, missing, mark)
            if not missing:
                return b"\r\n".join(cast("list[bytes]", encoded))
        if len(_QP_LINES) + len(missing) > _QP_LINES_MAX:
            _QP_LINES.clear()
        fresh = _escape(b"\n".join([lines[index] for index in missing])).split(b"\n")
        for index, line in zip(missing, fresh, strict=True):
            line = _soft_broken(line, last=True)
            _QP_LINES[lines[index]] = line
            encoded[index] = line
    return b"\r\n".join(cast("list[bytes]", encoded))


def _soft_broken(line: bytes, *, last: bool) -> bytes:
    """An escaped line (or the piece of one that starts a physical line) made safe and
    short. ``last``: it ends the line, so trailing whitespace is encoded; otherwise a
    soft break follows it, so its last physical line may hold 75 characters at most."""
    # Whitespace at the end of a line must be encoded, or transports may strip it.
    if last and line.endswith(_TRAILING_WHITESPACE):
        line = line[:-1] + (b"=20" if line[-1] == 0x20 else b"=09")
    # No physical line may start with "." (see WireReady): "=2E" is the same.
    if line[:1] == b".":
        line = b"=2E" + line[1:]
    if len(line) > (76 if last else 75):
        # Every piece holds at most 75 characters, so a soft break fits after each.
        pieces = _QP_SOFT_PIECE.findall
        broken = b"=\r\n".join(pieces(line))
        if b"\n." in broken:
            # A soft break landed before a dot: with every dot of the line as
            # "=2E", no piece can start with one.
            broken = b"=\r\n".join(pieces(line.replace(b".", b"=2E")))
        line = broken
    return line


@dataclass(frozen=True, slots=True)
class Marked:
    """A text part given as ``text`` holding ``mark`` wherever the real part, ``real``,
    holds ``value`` (a message's signed click-URL prefix, the same in all its links):
    the lines around the mark repeat for every recipient of a send, so they are encoded
    once, and only ``value`` is filled in per message. Make it with :meth:`of`. It is
    used for a part only when the part is this very ``real`` object; ``value`` must be
    printable ASCII without ``=`` and ``mark`` must not occur in the real text."""

    text: str
    mark: str
    value: str
    real: str

    @classmethod
    def of(cls, text: str, mark: str, value: str) -> Marked:
        return cls(text, mark, value, text.replace(mark, value))

    def usable_for(self, text: str) -> bool:
        value = self.value.encode("ascii", "replace")
        return (
            self.real is text
            and bool(self.mark)
            and bool(value)
            and not value.translate(None, _VALUE_BYTES)
        )


# Per mark, marked lines by their raw bytes: a ``%`` template with a hole per mark. Each
# value is set off by soft line breaks on both sides, so the template does not depend on
# it. Bounded like the line table.
_QP_MARKED: dict[bytes, dict[bytes, tuple[bytes, int]]] = {}
_QP_MARKED_MAX = 2048
_VALUE_BYTES = bytes(byte for byte in range(33, 127) if byte != 0x3D)


def _fill_marked(
    lines: list[bytes], encoded: list[bytes | None], missing: list[int], mark: Marked
) -> list[int]:
    """Fill the marked lines among ``missing``; returns the others."""
    needle = mark.mark.encode()
    table = _QP_MARKED.get(needle)
    if table is None or len(table) >= _QP_MARKED_MAX:
        if len(_QP_MARKED) >= 16:
            _QP_MARKED.clear()
        table = _QP_MARKED[needle] = {}
    known = table.get
    fills: list[tuple[bytes, ...]] = []  # by number of holes: the value block that many times
    left = []
    for index in missing:
        line = lines[index]
        entry = known(line)
        if entry is None:
            if needle not in line:
                left.append(index)
                continue
            entry = table[line] = _marked_template(line, needle)
        template, holes = entry
        if len(fills) <= holes:
            block = _soft_broken(mark.value.encode("ascii"), last=False)
            fills.extend((block,) * count for count in range(len(fills), holes + 1))
        encoded[index] = template % fills[holes]
    return left


def _marked_template(line: bytes, needle: bytes) -> tuple[bytes, int]:
    segments = line.split(needle)
    pieces = []
    for number, segment in enumerate(segments):
        if segment:
            last = number == len(segments) - 1
            pieces.append(_soft_broken(_escape(segment), last=last).replace(b"%", b"%%"))
        if number < len(segments) - 1:
            pieces.append(b"%s")
    return b"=\r\n".join(pieces), len(segments) - 1


def _escape(data: bytes) -> bytes:
    """``=`` and every byte outside printable ASCII, tab and LF as ``=XX``."""
    data = data.replace(b"=", b"=3D")
    # A replace pass per distinct unsafe byte: mostly-ASCII text has a handful, and
    # each pass is a C loop, where a regex would call back into Python for every run.
    unsafe = data.translate(None, _QP_SAFE_BYTES)
    while unsafe:
        byte = unsafe[0]
        data = data.replace(_BYTE[byte], _QP_ESCAPE[byte])
        unsafe = unsafe.replace(_BYTE[byte], b"")
    return data


def base64_lines(data: bytes) -> bytes:
    """Base64 in 76-column lines joined by CRLF (no trailing line break)."""
    return b"\r\n".join(_BASE64_LINE.findall(binascii.b2a_base64(data, newline=False)))


# ASCII lines known to be fine as 7bit. Like the QP table: the lines of a campaign
# repeat for every recipient, so each is checked once; bounded by clearing it.
_7BIT_LINES: set[str] = set()
_7BIT_LINES_MAX = 8192


def _all_7bit_lines(text: str) -> bool:
    """Every line of ASCII ``text`` (LF-separated) can go out as 7bit as it is."""
    lines = set(text.split("\n"))
    if lines <= _7BIT_LINES:
        return True
    new = lines - _7BIT_LINES
    if not all(map(_7bit_line, new)):
        return False
    if len(_7BIT_LINES) + len(new) > _7BIT_LINES_MAX:
        _7BIT_LINES.clear()
    _7BIT_LINES.update(new)
    return True


def _7bit_line(line: str) -> bool:
    return (
        len(line) <= HARD_LINE_LIMIT
        and not line.encode("ascii").translate(None, _7BIT_SAFE_BYTES)
        # Transports may strip whitespace at line ends; QP keeps it.
        and not line.endswith((" ", "\t"))
        # A line starting with "." would need dot-stuffing on the wire; QP avoids it.
        and not line.startswith(".")
    )


def encode_text_body(
    text: str, boundary: str | None, marked: Marked | None = None
) -> tuple[str, bytes]:
    """Choose a transfer encoding for a text part; returns ``(encoding, body)``.

    Pure ASCII with short lines goes as 7bit, mostly-ASCII text as quoted-printable and
    the rest as base64 (whichever is smaller: QP spends 3 bytes on each non-ASCII byte,
    base64 4 on every 3). Inside a multipart (``boundary`` given) the body decodes to
    exactly ``text``; a top-level body always ends in CRLF, which for 7bit text means
    ``text`` must end in a newline itself, or QP's soft line break stands in for it.
    ``marked``, when given for this ``text`` (``marked.real``), is it with its recurring
    value marked (see :class:`Marked`); the quoted-printable encoding goes through it.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        marked = None
    if marked is not None and not text.isascii() and marked.usable_for(text):
        # The value is ASCII, so the real text is as many bytes longer as characters.
        data = marked.text.encode("utf-8")
        size = len(data) + len(text) - len(marked.text)
        # Every non-ASCII character is 2 to 4 UTF-8 bytes, all of them non-ASCII: at
        # most twice the bytes it adds, so far below a sixth the text goes QP.
        if 2 * (size - len(text)) * 6 <= size:
            body = quoted_printable(data, marked)
            return "quoted-printable", body if boundary is not None else _top_level(body)
    if text.isascii():
        data = text.encode("ascii")
        if (text.endswith("\n") if boundary is None else boundary not in text) and _all_7bit_lines(
            text
        ):
            return "7bit", data.replace(b"\n", b"\r\n")
    else:
        data = text.encode("utf-8")
    non_ascii = 0 if text.isascii() else 2 * (len(data) - len(text))
    if non_ascii * 6 > len(data):
        non_ascii = len(data.translate(None, _ASCII_BYTES))
    if non_ascii * 6 > len(data):
        body = base64_lines(data)
        return "base64", body if boundary is not None else body + b"\r\n"
    body = quoted_printable(data)
    return "quoted-printable", body if boundary is not None else _top_level(body)


def _top_level(body: bytes) -> bytes:
    """A quoted-printable body that ends in CRLF, with a soft line break when the text
    does not end in a newline (a last line of 76 characters is broken first, so that
    the "=" still fits)."""
    if body.endswith(b"\r\n"):
        return body
    head, crlf, last = body.rpartition(b"\r\n")
    return head + crlf + _soft_broken(last, last=False) + b"=\r\n"
