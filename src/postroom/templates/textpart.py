"""Plain-text parts generated from HTML templates, as templates themselves.

The text is extracted once, at publish time, from the HTML *template* (not from each
rendered message): the Jinja tags are shielded from the HTML parser, inscriptis lays the
HTML out as text, and the tags are put back, so the text part personalises per recipient
like the HTML does and costs nothing extra to render.
"""

from __future__ import annotations

from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig

from postroom.templates.inlining import restore, shield

# The strict profile: the relaxed one turns the indentation of nested email layout
# tables into leading spaces on every line.
_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_links=True)


def html_to_text_template(html_template: str) -> str:
    """The text-part template for an HTML template (links shown as ``[label](url)``)."""
    shielded = shield(html_template, "text")
    text = get_text(shielded.text, _CONFIG)
    return tidy_text(restore(text, shielded))


def html_to_text(html: str) -> str:
    """Plain text of a rendered HTML message (when no text template could be made)."""
    return tidy_text(get_text(html, _CONFIG))


def tidy_text(text: str) -> str:
    """Drop trailing spaces, blank lines at the ends and runs of blank lines.

    Applied to the generated template and again to each rendered text part: a block tag
    alone on its line (``{% if %}``) renders as an empty line, and table columns are
    padded to the width of the template's tags rather than of the rendered values.
    """
    # One pass over the lines: it runs per recipient, and regexes over prose ('[ \t]+$',
    # '\n{3,}') cost several times more than this loop over a few dozen lines.
    lines: list[str] = []
    blank = True  # no blank lines at the start
    for line in text.split("\n"):
        line = line.rstrip()
        if line:
            lines.append(line)
            blank = False
        elif not blank:
            lines.append("")
            blank = True
    if lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"
