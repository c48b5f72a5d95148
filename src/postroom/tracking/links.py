"""Click and open tracking in rendered HTML: link rewriting and the open pixel.

This runs once per recipient, so it uses compiled regular expressions rather than an
HTML parser (a parser costs milliseconds on a 15 KB message; the regex pass costs tens
of microseconds). The tag pattern understands quoted attribute values, so a ``>`` or an
``href=`` inside another attribute's value does not confuse it. On the sending path the
scan goes chunk by chunk over what the template rendered (``rewrite_segments``): the
template's own text is the same for every recipient, so its links are found once per
send, and only the values and the links that run into them are looked at per message.
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
from collections.abc import Callable
from functools import lru_cache

# <a>, <area>, and Outlook's VML buttons (<v:roundrect href=...>) inside conditional
# comments, so clicks from Outlook desktop are counted too. Group 1 is everything up to
# the href value: the tag name and the attributes before href, each consumed whole
# (quoted values included), so "href=" inside another attribute's value never matches.
# Possessive quantifiers keep a tag without an href from backtracking.
_ATTRIBUTE_VALUE = r"""(?:"[^"]*+"|'[^']*+'|[^\s>]++)"""
_HREF_IN_LINK_TAG = re.compile(
    r"(<(?:a|area|v:roundrect)"
    rf"""(?:[\s/]++(?!href\s*=)[^\s"'>/=]++(?:\s*=\s*{_ATTRIBUTE_VALUE})?+)*+"""
    r"[\s/]++href\s*=\s*)"
    r"""(?:"([^"]*)"|'([^']*)'|([^\s>]+))""",
    re.IGNORECASE,
)
# Browsers drop these from URLs before looking at the scheme ("java\tscript:").
_ATTRIBUTE_UNSAFE = re.compile(r"[&<>\"']")
_URL_IGNORED = re.compile(r"[\t\n\r]")
_HTML_SPACE = " \t\n\r\f"
_TEMPLATE_LEFTOVER = re.compile(r"\{\{|\}\}|\{%|%\}|\*\||\|\*|%%|\[\[")
_BODY_CLOSE = re.compile(r"</body(?=[\s>])", re.IGNORECASE)
# For rewriting chunk by chunk (``LinkRewriter.rewrite_parts``): the "<" where a match
# attempt of ``_HREF_IN_LINK_TAG`` gets past the tag name, and those that could.
_LINK_TAG_START = re.compile(r"<(?:a|area|v:roundrect)[\s/]", re.IGNORECASE)
_MAYBE_LINK_TAG = re.compile(r"<(?=[aAvV]|.{0,11}\Z)", re.DOTALL)
_QUOTES = re.compile(r"[\"']")
_CHUNK_CHARS_MAX = 300_000  # per send: a large template fits, values with markup cycle out
_ChunkLinks = tuple[list[str] | None, list[tuple[int, int, tuple[str, str] | None]]]

_TRACKABLE_SCHEMES = ("http://", "https://")

# Stands in for a message's click prefix (``LinkRewriter.rewrite(html, CLICK_MARK)``)
# until it is put in, so that the builder sees the same link lines for every recipient
# of a send. Random per process and never sent, so no content can hold it; attribute-safe.
CLICK_MARK = f"postroom-click-{secrets.token_hex(12)}:"


@lru_cache(maxsize=8192)  # the same URLs recur in every recipient's copy
def link_id(url: str) -> str:
    """A stable short id for a destination URL (per-link click statistics)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]


def is_trackable(url: str) -> bool:
    """Only absolute http(s) URLs are rewritten: never ``mailto:``/``tel:``/``sms:``,
    ``#anchors``, ``javascript:``/``data:`` (no tracked URL may redirect to those),
    relative or empty links, or unrendered template tags."""
    if url[:8].lower().startswith(_TRACKABLE_SCHEMES):
        return _TEMPLATE_LEFTOVER.search(url) is None
    return False


def _clean_url(raw: str) -> str:
    url = raw.strip(_HTML_SPACE)
    if "&" in url:
        # "&amp;" is nearly always the only entity, and a plain replace is 5x cheaper.
        plain = url.replace("&amp;", "&")
        url = html.unescape(url) if "&" in url.replace("&amp;", "") else plain
    if "\t" in url or "\n" in url or "\r" in url:
        url = _URL_IGNORED.sub("", url)
    return url


def attribute_safe(value: str) -> str:
    """``value`` as it goes into a double-quoted attribute (escaped only when needed)."""
    if _ATTRIBUTE_UNSAFE.search(value):
        return html.escape(value, quote=True)
    return value


def rewrite_links(
    html_text: str,
    make_click_url: Callable[[str], str],
    *,
    skip: Callable[[str], bool] | None = None,
) -> str:
    """Point each trackable ``href`` at ``make_click_url(original_url)``.

    The original URL reaches ``make_click_url`` with HTML entities decoded (``&amp;``
    becomes ``&``); the click URL is written back attribute-escaped and double-quoted.
    ``skip(url)`` lets the caller keep links as they are (its own unsubscribe,
    preferences and web-view links).
    """

    def rewrite(match: re.Match[str]) -> str:
        double, single, bare = match.group(2, 3, 4)
        raw = double if double is not None else single if single is not None else bare
        url = _clean_url(raw)
        if not is_trackable(url) or (skip is not None and skip(url)):
            return match.group()
        click_url = make_click_url(url)
        if _ATTRIBUTE_UNSAFE.search(click_url):
            click_url = html.escape(click_url, quote=True)
        return f'{match.group(1)}"{click_url}"'

    return _HREF_IN_LINK_TAG.sub(rewrite, html_text)


class LinkRewriter:
    """Click rewriting for one send, with the per-link work done once per send.

    Every recipient of a send has (nearly) the same links, so what does not depend on
    the recipient is cached per distinct raw ``href`` value: whether it is tracked, and
    the attribute-safe, per-send part of its click URL (``link_part(url)``, e.g. the
    signed link half of a two-part click token). Per message, only the regex pass and
    one string join per link remain; the per-message part of the click URL
    (``prefix``) is prepended.
    """

    __slots__ = (
        "_cache",
        "_chunks",
        "_chunks_chars",
        "_link_part",
        "_skip",
        "max_entries",
    )

    def __init__(
        self,
        link_part: Callable[[str], str],
        *,
        skip: Callable[[str], bool] | None = None,
        max_entries: int = 4096,
    ) -> None:
        self._link_part = link_part
        self._skip = skip
        self._cache: dict[str, str | None] = {}
        self.max_entries = max_entries
        # Per chunk of rendered HTML (the template's own text, mostly): see _chunk_links.
        self._chunks: dict[str, _ChunkLinks] = {}
        self._chunks_chars = 0

    def _entry(self, raw: str) -> str | None:
        url = _clean_url(raw)
        entry: str | None = None
        if is_trackable(url) and not (self._skip is not None and self._skip(url)):
            entry = self._link_part(url)
            if _ATTRIBUTE_UNSAFE.search(entry):
                entry = html.escape(entry, quote=True)
        if len(self._cache) >= self.max_entries:
            # Personalised links never repeat; start over rather than grow without bound.
            self._cache.clear()
        self._cache[raw] = entry
        return entry

    def rewrite(self, html_text: str, prefix: str) -> str:
        """``html_text`` with each trackable ``href`` set to ``prefix + link_part(url)``
        (the same result as :func:`rewrite_links` with that click URL)."""
        return self._rewrite(html_text, attribute_safe(prefix))

    def _rewrite(self, html_text: str, prefix: str) -> str:
        cache = self._cache
        entry_for = self._entry

        def rewrite(match: re.Match[str]) -> str:
            double, single, bare = match.group(2, 3, 4)
            raw = double if double is not None else single if single is not None else bare
            try:
                part = cache[raw]
            except KeyError:
                part = entry_for(raw)
            if part is None:
                return match.group()
            return f'{match.group(1)}"{prefix}{part}"'

        return _HREF_IN_LINK_TAG.sub(rewrite, html_text)

    def _replacement(self, match: re.Match[str]) -> tuple[str, str] | None:
        """What a match of the link pattern becomes, as the text before and after the
        click prefix (None: it stays as it is)."""
        double, single, bare = match.group(2, 3, 4)
        raw = double if double is not None else single if single is not None else bare
        try:
            part = self._cache[raw]
        except KeyError:
            part = self._entry(raw)
        return None if part is None else (f'{match.group(1)}"', f'{part}"')

    def rewrite_parts(self, parts: list[str], prefix: str) -> str:
        """``rewrite("".join(parts), prefix)``, with the work on each chunk done once
        per send: ``parts`` are the chunks a template rendered (its own text, the same
        for every recipient, and each value in turn)."""
        return attribute_safe(prefix).join(self.rewrite_segments(parts))

    def rewrite_segments(self, parts: list[str]) -> list[str]:
        """The rewritten text of ``"".join(parts)`` cut where each click prefix goes:
        joined with a prefix, the segments are ``rewrite("".join(parts), prefix)``.

        It runs the same scan. Every match starts at a "<"; where a chunk has one, what
        the match attempt there finds is worked out once from the chunk alone when the
        attempt cannot look past the chunk's end (:meth:`_chunk_links`), and otherwise
        per message on the joined text, as is any "<" in a chunk seen for the first time.
        """
        text = "".join(parts)
        chunks = self._chunks
        segments: list[str] = []
        current: list[str] = []  # the segment being made
        copied = 0  # text[:copied] is in segments and current
        scanned = 0  # the scan goes on from here (the end of the last match)
        start = 0
        for part in parts:
            end = start + len(part)
            links = chunks.get(part)
            if links is None:
                if "<" not in part:
                    start = end
                    continue
                links = self._chunk_links(part)
                # Bounded in entries and in characters: values holding markup (never
                # the same twice) must not pile up.
                self._chunks_chars += len(part)
                if len(chunks) >= self.max_entries or self._chunks_chars > _CHUNK_CHARS_MAX:
                    chunks.clear()
                    self._chunks_chars = len(part)
                chunks[part] = links
            pieces, found = links
            if pieces is not None and scanned <= start:
                if copied < start:
                    current.append(text[copied:start])
                current.append(pieces[0])
                if len(pieces) > 1:
                    segments.append("".join(current))
                    segments.extend(pieces[1:-1])
                    current = [pieces[-1]]
                copied = scanned = end
            else:
                for offset, match_end, replacement in found:
                    at = start + offset
                    if at < scanned:
                        continue  # inside the previous match
                    if match_end < 0:  # the attempt may run on: made on the whole text
                        match = _HREF_IN_LINK_TAG.match(text, at)
                        if match is None:
                            continue
                        replacement = self._replacement(match)
                        match_end = match.end()
                    else:
                        match_end += start
                    if replacement is not None:
                        current.append(text[copied:at])
                        current.append(replacement[0])
                        segments.append("".join(current))
                        current = [replacement[1]]
                        copied = match_end
                    scanned = match_end
            start = end
        if copied == 0:
            return [text]
        current.append(text[copied:])
        segments.append("".join(current))
        return segments

    def _chunk_links(
        self, chunk: str
    ) -> tuple[list[str] | None, list[tuple[int, int, tuple[str, str] | None]]]:
        """The match attempts starting in ``chunk`` as ``(offset, end, replacement)``:
        a match found within the chunk (``end`` its end, ``replacement`` None when the
        link stays), or ``end`` -1 for an attempt that may look past the chunk's end.
        Attempts that fail inside the chunk are left out. Also, when every attempt stays
        inside the chunk, the chunk rewritten on its own, cut where click prefixes go
        (else None).

        An attempt at a "<" gets past the tag name only when a link tag name and a space
        or "/" follow, all inside the chunk. It then reads attributes up to the href
        value, and only looks further ahead when it takes a quote for the start of a
        quoted value: that search stays in the chunk when another quote of that kind
        follows in it. A match is kept when every quote inside it but the last has one
        (a bare value must also end before the chunk does). An attempt that finds no
        href ends at the first ">" when no quote comes before it.
        """
        found: list[tuple[int, int, tuple[str, str] | None]] = []
        contained = True
        size = len(chunk)
        last_double, last_single = chunk.rfind('"'), chunk.rfind("'")
        for candidate in _MAYBE_LINK_TAG.finditer(chunk):
            at = candidate.start()
            if size - at < 13:  # the chunk may end inside "<v:roundrect " and so on
                found.append((at, -1, None))
            elif _LINK_TAG_START.match(chunk, at) is None:
                continue  # fails at the name, inside the chunk
            elif (match := _HREF_IN_LINK_TAG.match(chunk, at)) is not None:
                end = match.end()
                if (
                    (match.group(4) is None or end < size)
                    and not at <= last_double < end - 1
                    and not at <= last_single < end - 1
                ):
                    found.append((at, end, self._replacement(match)))
                    continue
                # A bare value cut by the chunk's end, or a quote inside the match with
                # no other after it in the chunk: trying it as the start of a quoted
                # value, the attempt looked for its end past the chunk's.
                found.append((at, -1, None))
            else:
                close = chunk.find(">", at)
                if close >= 0 and _QUOTES.search(chunk, at, close) is None:
                    continue
                found.append((at, -1, None))
            contained = False
        if not contained:
            return None, found
        pieces: list[str] = []
        current: list[str] = []
        position = scanned = 0
        for at, end, replacement in found:
            if at < scanned:
                continue  # inside the previous match
            if replacement is not None:
                current.append(chunk[position:at])
                current.append(replacement[0])
                pieces.append("".join(current))
                current = [replacement[1]]
                position = end
            scanned = end
        current.append(chunk[position:])
        pieces.append("".join(current))
        return pieces, found


def open_pixel_html(url: str) -> str:
    """A 1x1 image tag for the open-tracking URL."""
    return (
        f'<img src="{html.escape(url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0" />'
    )


def insert_open_pixel_into(segments: list[str], pixel_url: str) -> bool:
    """:func:`insert_open_pixel` on the text the segments make when joined with strings
    holding no "<" (``LinkRewriter.rewrite_segments``): no ``</body`` can then span two
    segments, so the last one is in the last segment holding one. ``False`` (nothing
    done) when there is none spelt ``</body`` or ``</BODY``."""
    for index in range(len(segments) - 1, -1, -1):
        segment = segments[index]
        at = max(segment.rfind("</body"), segment.rfind("</BODY"))
        if at >= 0:
            segments[index] = segment[:at] + open_pixel_html(pixel_url) + segment[at:]
            return True
    return False


def insert_open_pixel(html_text: str, pixel_url: str) -> str:
    """The pixel just before the last ``</body>``, or at the end without one."""
    pixel = open_pixel_html(pixel_url)
    at = max(html_text.rfind("</body"), html_text.rfind("</BODY"))
    if at < 0:
        # Mixed case is rare enough for the slower regex pass.
        closing = None
        for closing in _BODY_CLOSE.finditer(html_text):  # noqa: B007 - keep the last one
            pass
        if closing is None:
            return html_text + pixel
        at = closing.start()
    return html_text[:at] + pixel + html_text[at:]
