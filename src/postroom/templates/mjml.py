"""MJML to HTML with the ``mjml`` package (the mjml-python port), keeping Jinja tags.

Block tags become HTML comments, which mjml-python carries through to the output where
they stood (between sections, rows or inside ``mj-text``); expressions become bare
tokens, which survive in text, attributes and ``mj-title``/``mj-preview``. Jinja in
layout attributes that MJML computes with (``padding``, ``width``) is not supported.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from postroom.templates.inlining import restore, shield
from postroom.templates.jinja_tags import block_tags


class MjmlFailed(Exception):
    """The MJML source could not be converted."""


def mjml_to_html_template(source: str) -> str:
    """Convert an MJML template to an HTML template; raises :class:`MjmlFailed`."""
    # Imported lazily and untyped: mjml ships no type information, and only publishing
    # an MJML template needs it.
    mjml: Any = import_module("mjml")
    if "<mjml" not in source.lower():
        raise MjmlFailed("invalid MJML: the source has no <mjml> root element")
    shielded = shield(source, "mjml")
    try:
        result = mjml.mjml_to_html(shielded.text)
    except Exception as error:  # the converter raises bare ValueErrors, KeyErrors...
        raise MjmlFailed(f"invalid MJML: {error}") from error
    if result.errors:
        raise MjmlFailed("invalid MJML: " + "; ".join(str(e) for e in result.errors))
    html = restore(str(result.html), shielded)
    if block_tags(html) != block_tags(source):
        raise MjmlFailed("template tags must stand between or inside MJML elements")
    return html
