"""Finding the Jinja tags of a template source, by position, without parsing it.

Used to shield tags from HTML parsers, to point at syntax errors, and to check that a
round trip through a parser kept every block tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_TAG_OPENERS = re.compile(r"\{[{%#]")
_RAW_END = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")
_BLOCK_KEYWORD = re.compile(r"\{%[-+]?\s*(\w+)")
TagKind = Literal["var", "block", "comment", "raw"]
_KINDS: dict[str, TagKind] = {"{{": "var", "{%": "block", "{#": "comment"}


@dataclass(frozen=True, slots=True)
class JinjaTag:
    """One ``{{ }}``, ``{% %}``, ``{# #}`` or whole ``{% raw %}…{% endraw %}`` in a source."""

    start: int
    end: int  # exclusive; the end of the source for an unterminated tag
    kind: TagKind
    terminated: bool
    source: str

    @property
    def keyword(self) -> str:
        """The tag name of a block tag (``for``, ``endif``…), else ``""``."""
        match = _BLOCK_KEYWORD.match(self.source) if self.kind in ("block", "raw") else None
        return match.group(1) if match else ""


def _find_closer(source: str, position: int, closer: str) -> int:
    """Index just past ``closer``, skipping quoted strings as Jinja's lexer does; -1 if none."""
    quote = ""
    length = len(source)
    while position < length:
        char = source[position]
        if quote:
            if char == "\\":
                position += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif source.startswith(closer, position):
            return position + len(closer)
        position += 1
    return -1


def scan_jinja(source: str) -> list[JinjaTag]:
    """All Jinja tags of ``source`` in order; an unterminated one runs to the end."""
    tags: list[JinjaTag] = []
    position = 0
    while (match := _TAG_OPENERS.search(source, position)) is not None:
        start = match.start()
        opener = match.group()
        if opener == "{#":
            close = source.find("#}", start + 2)
            end = -1 if close < 0 else close + 2
        else:
            end = _find_closer(source, start + 2, "}}" if opener == "{{" else "%}")
        if end < 0:
            tags.append(JinjaTag(start, len(source), _KINDS[opener], False, source[start:]))
            break
        tag = JinjaTag(start, end, "block" if opener == "{%" else "var", True, source[start:end])
        if opener == "{#":
            tag = JinjaTag(start, end, "comment", True, source[start:end])
        elif tag.keyword == "raw":
            raw_end = _RAW_END.search(source, end)
            stop = raw_end.end() if raw_end else len(source)
            tag = JinjaTag(start, stop, "raw", raw_end is not None, source[start:stop])
        tags.append(tag)
        position = tag.end
    return tags


def escape_jinja_delimiters(text: str) -> str:
    """Make literal ``{{``/``{%``/``{#`` in parser output print as text, not open a tag.

    HTML parsers decode ``&#123;&#123;`` to ``{{``; left as is, that would become template
    syntax once the placeholders are restored.
    """
    return re.sub(r"\{(?=[{%#])", "{{ '{' }}", text)


def block_tags(source: str) -> list[str]:
    """The block tags (and raw sections) of a template, in order: these must all survive
    a round trip through an HTML parser for the template to keep its structure."""
    return [tag.source for tag in scan_jinja(source) if tag.kind in ("block", "raw")]
