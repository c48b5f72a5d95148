"""Jinja-aware HTML processing: find Jinja tags, shield them from HTML parsers, inline CSS.

HTML tools (css-inline's html5ever, inscriptis' lxml, mjml's BeautifulSoup) do not know
Jinja. Fed a template as is, they move or mangle its tags: a ``{% for %}`` between two
``<tr>`` is text where the HTML5 algorithm forbids text, so it is "foster-parented" out of
the table. So before parsing, each Jinja tag is replaced with a placeholder that survives
the parser where it stands, and put back afterwards:

* in element content: an HTML comment ``<!--prNt7x-->`` (comments may stand anywhere,
  tables included), or for the text part a bare token (inscriptis drops comments), put
  inside a ``<tr><td>`` or ``<td>`` when it stands between rows or cells;
* inside a start tag, an attribute value, ``<style>``/``<title>`` or an HTML comment: a
  bare lowercase token, padded with spaces inside tags so that ``class="a{{ x }}"``
  still has the class ``a`` for CSS selectors.

The token holds a random nonce that is not in the source, so it cannot clash with text.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import css_inline

from postroom.templates.jinja_tags import block_tags, escape_jinja_delimiters, scan_jinja

# --- placeholders ---------------------------------------------------------------------------


class Spot(Enum):
    """Where in the HTML a Jinja tag stands."""

    CONTENT = "content"  # element content
    TAG = "tag"  # inside a start tag, outside any attribute value
    QUOTED = "quoted"  # inside a quoted attribute value
    UNQUOTED = "unquoted"  # as (part of) an unquoted attribute value
    LITERAL = "literal"  # inside <style>, <title>…, or an HTML comment


Mode = Literal["inline", "text", "mjml"]

_TEXT_ELEMENTS = frozenset(
    {"style", "script", "title", "textarea", "xmp", "iframe", "noembed", "noframes"}
)
# In MJML these hold text or CSS that the converter copies out as a string.
_MJML_TEXT_ELEMENTS = _TEXT_ELEMENTS | {"mj-title", "mj-preview", "mj-style", "mj-attributes"}
_ROW_PARENTS = frozenset({"table", "thead", "tbody", "tfoot"})
_TABLE_ELEMENTS = _ROW_PARENTS | {"tr", "td", "th", "caption"}
# HTML lets these end tags be left out: a new row ends the open cell and row, and so on.
_CELLS = frozenset({"td", "th"})
_IMPLIED_END_TAGS = {
    "tr": _CELLS | {"tr"},
    "td": _CELLS,
    "th": _CELLS,
    **dict.fromkeys(("thead", "tbody", "tfoot"), _CELLS | {"tr", "thead", "tbody", "tfoot"}),
}


@dataclass(slots=True)
class Shielded:
    """A source with its Jinja tags replaced by placeholders, and what to put back."""

    text: str
    prefix: str
    originals: list[str] = field(default_factory=list)
    spots: list[Spot] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


_MARKUP_START = re.compile(r"</?([A-Za-z][^\s/>{]*)|<[!?]")
_TAG_SPECIAL = re.compile(r"[\"'>]")


class _HtmlContext:
    """Tracks where in the HTML the scan is, across the text between Jinja tags."""

    def __init__(self, text_elements: frozenset[str]) -> None:
        self.text_elements = text_elements
        self.state = "data"  # data | tag | dq | sq | comment | text
        self.tag_name = ""
        self.closing = False
        self.text_element = ""
        self.table_stack: list[str] = []
        self.tag_tail = ""  # the last characters seen inside the current tag

    def spot(self) -> Spot:
        if self.state == "data":
            return Spot.CONTENT
        if self.state in ("dq", "sq"):
            return Spot.QUOTED
        if self.state == "tag":
            return Spot.UNQUOTED if self.tag_tail.rstrip().endswith("=") else Spot.TAG
        return Spot.LITERAL

    def feed(self, html: str) -> None:
        position = 0
        length = len(html)
        while position < length:
            if self.state == "data":
                position = self._in_data(html, position)
            elif self.state == "tag":
                position = self._in_tag(html, position)
            elif self.state in ("dq", "sq"):
                close = html.find('"' if self.state == "dq" else "'", position)
                if close < 0:
                    return
                self.state, self.tag_tail, position = "tag", "", close + 1
            elif self.state == "comment":
                close = html.find("-->", position)
                if close < 0:
                    return
                self.state, position = "data", close + 3
            else:  # text element: runs to its end tag
                match = re.search(rf"</{re.escape(self.text_element)}", html[position:], re.I)
                if match is None:
                    return
                self._open_tag(self.text_element, closing=True)
                position += match.end()

    def _in_data(self, html: str, position: int) -> int:
        opening = html.find("<", position)
        if opening < 0:
            return len(html)
        if html.startswith("<!--", opening):
            self.state = "comment"
            return opening + 4
        match = _MARKUP_START.match(html, opening)
        if match is None:
            return opening + 1
        self._open_tag((match.group(1) or "").lower(), closing=match.group().startswith("</"))
        return match.end()

    def _open_tag(self, name: str, *, closing: bool) -> None:
        self.state, self.tag_name, self.closing, self.tag_tail = "tag", name, closing, ""

    def _in_tag(self, html: str, position: int) -> int:
        match = _TAG_SPECIAL.search(html, position)
        if match is None:
            self.tag_tail = (self.tag_tail + html[position:])[-8:]
            return len(html)
        char = match.group()
        if char == ">":
            self._end_tag()
        else:
            self.state = "dq" if char == '"' else "sq"
        return match.end()

    def _end_tag(self) -> None:
        name = self.tag_name
        self.state = "data"
        if self.closing:
            if name in self.table_stack:
                while self.table_stack and self.table_stack.pop() != name:
                    pass
            return
        if name in self.text_elements:
            self.state, self.text_element = "text", name
        elif name in _TABLE_ELEMENTS:
            self._push_table_element(name)

    def _push_table_element(self, name: str) -> None:
        implied = _IMPLIED_END_TAGS.get(name, frozenset())
        while self.table_stack and self.table_stack[-1] in implied:
            self.table_stack.pop()
        self.table_stack.append(name)


def shield(source: str, mode: Mode) -> Shielded:
    """Replace the Jinja tags of an HTML (or MJML) template with parser-proof placeholders."""
    prefix = "pr" + secrets.token_hex(4) + "t"
    while prefix in source.lower():
        prefix = "pr" + secrets.token_hex(4) + "t"
    shielded = Shielded("", prefix)
    context = _HtmlContext(_MJML_TEXT_ELEMENTS if mode == "mjml" else _TEXT_ELEMENTS)
    pieces: list[str] = []
    position = 0
    for tag in scan_jinja(source):
        html = source[position : tag.start]
        context.feed(html)
        index = len(shielded.originals)
        spot = context.spot()
        shielded.originals.append(tag.source)
        shielded.spots.append(spot)
        shielded.kinds.append(tag.kind)
        pieces.append(html)
        pieces.append(_placeholder(f"{prefix}{index}x", spot, tag.kind, mode, context))
        position = tag.end
    pieces.append(source[position:])
    shielded.text = "".join(pieces)
    return shielded


def _placeholder(token: str, spot: Spot, kind: str, mode: Mode, context: _HtmlContext) -> str:
    if spot in (Spot.TAG, Spot.QUOTED):
        return f" {token} "
    if spot is not Spot.CONTENT:
        return token
    if mode == "inline" or (mode == "mjml" and kind != "var"):
        return f"<!--{token}-->"
    if mode == "text" and context.table_stack:
        if context.table_stack[-1] in _ROW_PARENTS:
            return f"<tr><td>{token}</td></tr>"
        if context.table_stack[-1] == "tr":
            return f"<td>{token}</td>"
    return token


def restore(text: str, shielded: Shielded) -> str:
    """Put the Jinja tags back in place of their placeholders (after escaping literals)."""
    text = escape_jinja_delimiters(text)
    pattern = re.compile(rf"( ?)(<!--)?{shielded.prefix}(\d+)x(-->|=\"\")?( ?)")

    def put_back(match: re.Match[str]) -> str:
        lead, comment, number, tail, trail = match.groups()
        index = int(number)
        if index >= len(shielded.originals):
            return match.group()
        original = shielded.originals[index]
        spot = shielded.spots[index]
        if comment and tail == "-->" and spot is Spot.CONTENT:
            # The comment is the placeholder's own wrapping; a tag the author wrote inside
            # a comment (spot COMMENT) keeps the comment around it.
            return lead + original + trail
        comment = comment or ""
        if spot is Spot.QUOTED:  # drop the padding, keep what the parser left around it
            return comment + original + ("" if tail == '=""' else tail or "")
        if spot is Spot.TAG:  # a bare token in a tag became an empty attribute: tok=""
            return lead + comment + original + ("" if tail == '=""' else tail or "") + trail
        return lead + comment + original + (tail or "") + trail

    return pattern.sub(put_back, text)


# --- CSS inlining -----------------------------------------------------------------------

_START_TAG = re.compile(
    r"<[A-Za-z][^\s/>]*(?:\s+[^\s=/>]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*\s*/?>"
)
_STYLE_ATTRIBUTE = re.compile(r"(\s)style(\s*=\s*)(\"[^\"]*\"|'[^']*')", re.I)
_TAG_NAME = re.compile(r"<[^\s/>]+")
_ATTRIBUTE = re.compile(r"\s+([^\s=/>]+)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+))?")
_STYLE_ATTRIBUTE_SET_ASIDE = "data-postroom-style"
_STYLE_SET_ASIDE = re.compile(rf'\s{_STYLE_ATTRIBUTE_SET_ASIDE}="([^"]*)"')
_REGION_ATTRIBUTE = "data-postroom-attributes"
_REGION = re.compile(rf'\s{_REGION_ATTRIBUTE}="(\d+)"')
_INLINED_STYLE = re.compile(r'(\s)style="([^"]*)"')

_INLINER = css_inline.CSSInliner(
    load_remote_stylesheets=False,
    keep_at_rules=True,  # @media rules stay in a <style> block: they cannot be inlined
    keep_style_tags=False,
)


class InliningFailed(Exception):
    """The HTML could not be inlined without changing the template's structure."""


def inline_css(html_template: str) -> str:
    """Inline the ``<style>`` rules of an HTML template into ``style`` attributes.

    Jinja tags are shielded first and restored after. Two things inside start tags are
    set aside from css-inline, which parses them (and reorders attributes):
    ``style`` attributes holding Jinja (appended after the inlined rules, so they still
    win like any inline style), and attributes between Jinja tags such as
    ``{% if x %}class="a"{% endif %}`` (kept verbatim, in order). Raises
    :class:`InliningFailed` if css-inline fails or a block tag did not come through.
    """
    shielded = shield(html_template, "inline")
    regions: list[str] = []
    prepared = _START_TAG.sub(
        lambda m: _set_aside(m.group(), shielded.prefix, regions), shielded.text
    )
    try:
        inlined = _INLINER.inline(prepared)
    except css_inline.InlineError as error:
        raise InliningFailed(f"CSS inlining failed: {error}") from error
    merged = _START_TAG.sub(lambda m: _put_back_set_aside(m.group(), regions), inlined)
    restored = restore(merged, shielded)
    if block_tags(restored) != block_tags(html_template):
        raise InliningFailed("CSS inlining would have moved template tags")
    return restored


def _set_aside(tag: str, prefix: str, regions: list[str]) -> str:
    name = _TAG_NAME.match(tag)
    start_of_attributes = name.end() if name else 1
    dynamic = [
        attribute
        for attribute in _ATTRIBUTE.finditer(tag, start_of_attributes)
        if prefix in attribute.group(1)
    ]
    if dynamic:
        start, end = dynamic[0].start(), dynamic[-1].end()
        regions.append(tag[start:end])
        tag = f'{tag[:start]} {_REGION_ATTRIBUTE}="{len(regions) - 1}"{tag[end:]}'

    def rename(match: re.Match[str]) -> str:
        if prefix not in match.group(3):
            return match.group()
        return f"{match.group(1)}{_STYLE_ATTRIBUTE_SET_ASIDE}{match.group(2)}{match.group(3)}"

    return _STYLE_ATTRIBUTE.sub(rename, tag)


def _put_back_set_aside(tag: str, regions: list[str]) -> str:
    region = _REGION.search(tag)
    if region is not None:
        tag = tag[: region.start()] + regions[int(region.group(1))] + tag[region.end() :]
    set_aside = _STYLE_SET_ASIDE.search(tag)
    if set_aside is None:
        return tag
    declarations = set_aside.group(1).strip()
    tag = tag[: set_aside.start()] + tag[set_aside.end() :]
    inlined = _INLINED_STYLE.search(tag)
    if inlined is None:
        name = _TAG_NAME.match(tag)
        name_end = name.end() if name else 1
        return f'{tag[:name_end]} style="{declarations}"{tag[name_end:]}'
    merged = inlined.group(2).strip().rstrip(";")
    merged = f"{merged};{declarations}" if merged else declarations
    return f'{tag[: inlined.start()]}{inlined.group(1)}style="{merged}"{tag[inlined.end() :]}'
