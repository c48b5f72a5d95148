"""JSON bodies and query strings may carry only text that both databases can store.

PostgreSQL refuses NUL (U+0000) in ``text`` and ``jsonb``, and neither database driver
can encode a lone UTF-16 surrogate (``"\\ud800"`` without its pair), which JSON can
escape. Pydantic's ``str`` refuses surrogates but not NUL, and free-form JSON (contact
attributes, event data, filter values) refuses neither, so such a value used to reach the
INSERT and fail there as a 500. ``ApiRoute`` runs this on every JSON body before the
handler, which makes the answer a 422 naming the field, the same on both databases.

The check costs one regex scan of the raw body; the JSON is parsed (again) only when an
escape that could produce such a character is present. Query strings (``%00``) are
checked the same way: a NUL in a search term or a filename is a 422 on ``query.<name>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from postroom.errors import FieldProblem

# JSON can only produce NUL or a surrogate through a \u escape (raw control characters
# are invalid JSON, raw surrogates are invalid UTF-8).
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
CODE = "invalid_character"


def _reason(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL characters (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain an unpaired UTF-16 surrogate (\\ud800-\\udfff)"
    return None


def _field(path: list[str | int]) -> str:
    return ".".join(str(part) for part in path) or "body"


def _find(value: Any, path: list[str | int]) -> FieldProblem | None:
    if isinstance(value, str):
        reason = _reason(value)
        return FieldProblem(_field(path), reason, CODE) if reason else None
    if isinstance(value, dict):
        for key, item in value.items():
            reason = _reason(key)
            if reason:
                return FieldProblem(_field(path), f"keys {reason}", CODE)
            found = _find(item, [*path, key])
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find(item, [*path, index])
            if found:
                return found
    return None


def unstorable_text(body: bytes) -> FieldProblem | None:
    """The first string (or key) in a JSON body that no database can store, if any."""
    if not _SUSPECT_ESCAPE.search(body):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: body validation answers that, with its own message
    return _find(document, [])


def unstorable_query(params: Iterable[tuple[str, str]]) -> FieldProblem | None:
    """The first query parameter whose name or value holds a NUL, if any (Starlette
    decodes percent-escapes as UTF-8 with replacement, so no surrogate gets through)."""
    for name, value in params:
        if "\x00" in name or "\x00" in value:
            return FieldProblem(f"query.{name}", "must not contain NUL characters (%00)", CODE)
    return None
