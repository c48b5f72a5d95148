"""Publish-time compilation of a template version into a reusable CompiledContent.

Adds the unsubscribe footer to marketing mail and the hidden preheader, generates the
text part from the HTML (as a template), inlines the CSS, and compiles every part once.
Compiled content is cached per process by a hash of its inputs.
"""

from __future__ import annotations

import hashlib
import html as html_escaping
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from jinja2 import Template, TemplateSyntaxError, nodes

from postroom.templates.errors import TemplateError, TemplateProblem, TemplateWarning
from postroom.templates.inlining import InliningFailed, inline_css
from postroom.templates.jinja_tags import scan_jinja
from postroom.templates.mjml import MjmlFailed, mjml_to_html_template
from postroom.templates.sandbox import (
    GENERATED_TEXT_ENVIRONMENT,
    HTML_ENVIRONMENT,
    TEXT_ENVIRONMENT,
    LimitedSandboxEnvironment,
    mark_constant,
)
from postroom.templates.syntax import (
    FieldError,
    parse_field,
    parse_fields,
)
from postroom.templates.textpart import html_to_text_template

Kind = Literal["marketing", "transactional"]
KINDS: tuple[Kind, ...] = ("marketing", "transactional")
UNSUBSCRIBE_NAMES = frozenset({"unsubscribe_url", "unsubscribeUrl", "manage_url", "manageUrl"})

FOOTER_HTML = (
    '<div class="postroom-footer" style="padding:24px 0;font-family:Arial,Helvetica,sans-serif;'
    'font-size:12px;line-height:18px;color:#6b7280;text-align:center;">'
    '<a href="{{ unsubscribe_url }}" style="color:#6b7280;text-decoration:underline;">'
    "Unsubscribe</a> &middot; "
    '<a href="{{ manage_url }}" style="color:#6b7280;text-decoration:underline;">'
    "Manage preferences</a></div>\n"
)
FOOTER_TEXT = "\n\n--\nUnsubscribe: {{ unsubscribe_url }}\nManage preferences: {{ manage_url }}\n"
# Hidden preview text right after <body>: the first text a mail client finds.
PREHEADER_HTML = (
    '<div class="postroom-preheader" style="display:none;font-size:1px;line-height:1px;'
    'max-height:0;max-width:0;opacity:0;overflow:hidden;mso-hide:all;">{}</div>\n'
)
_BODY_START = re.compile(r"<body\b[^>]*>", re.I)
_BODY_END = re.compile(r"</body\s*>", re.I)


@dataclass(frozen=True, slots=True)
class CompiledContent:
    """A published template version, compiled once and rendered for every recipient.

    Immutable and free of per-recipient state, so it can be cached and shared between
    threads. ``*_source`` are the final Jinja sources (after footer, preheader, CSS
    inlining and text generation), useful for previews and debugging.
    """

    content_hash: str
    kind: Kind
    subject_source: str
    html_source: str
    text_source: str | None  # None: generated from each rendered HTML (fallback)
    preheader_source: str
    subject_template: Template
    html_template: Template
    text_template: Template | None
    preheader_template: Template
    text_generated: bool
    footer_added: bool
    css_inlined: bool
    warnings: tuple[TemplateWarning, ...]


def _references(ast: nodes.Template, names: frozenset[str]) -> bool:
    return any(isinstance(n, nodes.Name) and n.name in names for n in ast.find_all(nodes.Name))


def _insert_before_body_end(html: str, snippet: str) -> str:
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + snippet
    position = ends[-1].start()
    return html[:position] + snippet + html[position:]


def _insert_after_body_start(html: str, snippet: str) -> str:
    start = _BODY_START.search(html)
    position = start.end() if start else 0
    return html[:position] + snippet + html[position:]


def _escape_literal_text(template: str) -> str:
    """HTML-escape the text of a text template, leaving its Jinja tags alone."""
    pieces: list[str] = []
    position = 0
    for tag in scan_jinja(template):
        pieces.append(html_escaping.escape(template[position : tag.start], quote=False))
        pieces.append(tag.source)
        position = tag.end
    pieces.append(html_escaping.escape(template[position:], quote=False))
    return "".join(pieces)


def _generate_text(html_source: str) -> tuple[str, Template] | None:
    try:
        text_source = html_to_text_template(html_source)
        return text_source, GENERATED_TEXT_ENVIRONMENT.from_string(text_source)
    except (TemplateSyntaxError, ValueError):
        return None


def _inline(html_source: str) -> tuple[str, Template] | None:
    try:
        inlined = inline_css(html_source)
        return inlined, HTML_ENVIRONMENT.from_string(inlined)
    except (InliningFailed, TemplateSyntaxError):
        return None


def _compile_field(field: str, source: str, environment: LimitedSandboxEnvironment) -> Template:
    """Compile a checked source; an error only the compiler finds is still located."""
    try:
        return environment.from_string(source)
    except TemplateSyntaxError:
        try:
            parse_field(environment, field, source, compile=True)
        except FieldError as error:
            raise TemplateProblem([error.error]) from None
        raise


def compile_content(
    *,
    subject: str,
    html: str,
    text: str | None,
    preheader: str | None = None,
    kind: str = "marketing",
    inject_preheader: bool = True,
) -> CompiledContent:
    """Compile a template version for sending; raises :class:`TemplateProblem`.

    Marketing HTML that never uses ``unsubscribe_url``/``manage_url`` (or their camelCase
    aliases) gets an unsubscribe footer before ``</body>``, and so does a given text part.
    Without a text part, one is generated from the HTML as a template. A non-empty
    preheader is also put into the HTML as hidden preview text (``inject_preheader``).
    ``warnings`` holds what compiling noticed (``css_not_inlined``,
    ``text_generated_at_send``); variable warnings come from ``check_syntax``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    checked_kind: Kind = "marketing" if kind == "marketing" else "transactional"
    # Parsed without compiling: each field is compiled once, in its final form, below.
    parsed = parse_fields(subject, html, text, preheader, compile=False)
    asts = {field.field: field.ast for field, _ in parsed}
    warnings: list[TemplateWarning] = []
    marketing = checked_kind == "marketing"
    footer_added = marketing and not _references(asts["html"], UNSUBSCRIBE_NAMES)
    html_source = _insert_before_body_end(html, FOOTER_HTML) if footer_added else html
    text_source: str | None = text
    text_template: Template | None = None
    if text is None:
        generated = _generate_text(html_source)
        if generated is None:
            message = "the text part could not be generated once; it is made per message"
            warnings.append(TemplateWarning("text", message, None, None, "text_generated_at_send"))
            text_source = None
        else:
            text_source, text_template = generated
    else:
        if marketing and not _references(asts["text"], UNSUBSCRIBE_NAMES):
            text_source = text.rstrip("\n") + FOOTER_TEXT
        text_template = _compile_field("text", text_source or "", TEXT_ENVIRONMENT)
    if preheader and preheader.strip() and inject_preheader:
        hidden = PREHEADER_HTML.format(_escape_literal_text(preheader))
        html_source = _insert_after_body_start(html_source, hidden)
    inlined = _inline(html_source)
    if inlined is None:
        message = "CSS could not be inlined without moving template tags; sent as written"
        warnings.append(TemplateWarning("html", message, None, None, "css_not_inlined"))
        _compile_field("html", html, HTML_ENVIRONMENT)  # an error is located in the source
        html_final, html_template = html_source, HTML_ENVIRONMENT.from_string(html_source)
    else:
        html_final, html_template = inlined
    preheader_source = preheader or ""
    compiled = CompiledContent(
        content_hash=_content_hash(subject, html, text, preheader, kind, inject_preheader),
        kind=checked_kind,
        subject_source=subject,
        html_source=html_final,
        text_source=text_source,
        preheader_source=preheader_source,
        subject_template=_compile_field("subject", subject, TEXT_ENVIRONMENT),
        html_template=html_template,
        text_template=text_template,
        preheader_template=_compile_field("preheader", preheader_source, TEXT_ENVIRONMENT),
        text_generated=text is None,
        footer_added=footer_added,
        css_inlined=inlined is not None,
        warnings=tuple(warnings),
    )
    for template, source in (
        (compiled.subject_template, subject),
        (compiled.html_template, html_final),
        (compiled.text_template, text_source),
        (compiled.preheader_template, preheader_source),
    ):
        if template is not None and source is not None:
            mark_constant(template, source)
    return compiled


def _content_hash(*inputs: object) -> str:
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()


_CACHE_SIZE = 256
_cache: OrderedDict[str, CompiledContent] = OrderedDict()
_cache_lock = threading.Lock()


def compile_content_cached(
    *,
    subject: str,
    html: str,
    text: str | None,
    preheader: str | None = None,
    kind: str = "marketing",
    inject_preheader: bool = True,
) -> CompiledContent:
    """:func:`compile_content` through an LRU cache (256 entries) keyed by a SHA-256 of
    the inputs, so workers compile each published version once."""
    key = _content_hash(subject, html, text, preheader, kind, inject_preheader)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    compiled = compile_content(
        subject=subject,
        html=html,
        text=text,
        preheader=preheader,
        kind=kind,
        inject_preheader=inject_preheader,
    )
    with _cache_lock:
        _cache[key] = compiled
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled


def clear_compiled_cache() -> None:
    with _cache_lock:
        _cache.clear()


def compile_mjml(source: str) -> str:
    """MJML to an HTML template (mjml-python), keeping Jinja tags; raises TemplateProblem."""
    try:
        return mjml_to_html_template(source)
    except MjmlFailed as error:
        raise TemplateProblem(
            [TemplateError("mjml", str(error), None, None, "mjml_invalid")]
        ) from None
