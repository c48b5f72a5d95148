"""Template compilation and rendering: the API the rest of Postroom calls.

* :func:`check_syntax` at save time: errors with line and column, warnings for unknown
  variables.
* :func:`compile_content` (or :func:`compile_content_cached`) once at publish time: adds
  the unsubscribe footer to marketing mail, generates the text part, inlines the CSS and
  compiles the Jinja templates into a reusable :class:`CompiledContent`.
* :func:`render_content` per recipient, with the context from :func:`build_context`,
  inside the sandbox and its limits (:class:`RenderLimits`).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template, UndefinedError
from jinja2.exceptions import SecurityError

from postroom.templates.compiling import (
    KINDS,
    CompiledContent,
    clear_compiled_cache,
    compile_content,
    compile_content_cached,
    compile_mjml,
)
from postroom.templates.errors import (
    RenderLimitExceeded,
    TemplateError,
    TemplateProblem,
    TemplateRenderFailed,
    TemplateWarning,
    UnsafeTemplate,
)
from postroom.templates.limits import (
    DEFAULT_LIMITS,
    LimitHit,
    RenderBudget,
    RenderLimits,
    budget_scope,
)
from postroom.templates.sandbox import render_limited, render_limited_parts, template_line
from postroom.templates.syntax import (
    CONTACT_FIELDS,
    CONTEXT_NAMES,
    parse_fields,
    unknown_variable_warnings,
)
from postroom.templates.textpart import html_to_text, tidy_text

__all__ = [
    "CONTACT_FIELDS",
    "CONTEXT_NAMES",
    "DEFAULT_LIMITS",
    "KINDS",
    "CompiledContent",
    "FieldDiff",
    "RenderLimitExceeded",
    "RenderLimits",
    "RenderedContent",
    "TemplateError",
    "TemplateProblem",
    "TemplateRenderFailed",
    "TemplateWarning",
    "UnsafeTemplate",
    "build_context",
    "check_syntax",
    "clear_compiled_cache",
    "compile_content",
    "compile_content_cached",
    "compile_mjml",
    "diff_versions",
    "render_content",
]


@dataclass(frozen=True, slots=True)
class RenderedContent:
    subject: str
    html: str
    text: str
    preheader: str


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """The unified diff of one field between two versions (empty when unchanged)."""

    field: str
    changed: bool
    diff: str
    added_lines: int
    removed_lines: int


# --- save time ------------------------------------------------------------------------------


def check_syntax(
    *,
    subject: str,
    html: str,
    text: str | None,
    preheader: str | None,
    declared: Collection[str] = (),
) -> list[TemplateWarning]:
    """Check every field; raise :class:`TemplateProblem` listing the first error of each
    field that has one (with line and column), else return the warnings: variables that
    are not in the message context nor in ``declared``, and unknown ``contact`` fields
    (``declared`` may hold ``"contact.<field>"`` entries for extra contact fields)."""
    warnings: list[TemplateWarning] = []
    for parsed, environment in parse_fields(subject, html, text, preheader, compile=True):
        warnings.extend(unknown_variable_warnings(parsed, environment, declared))
    return warnings


# --- send time --------------------------------------------------------------------------


def build_context(
    *,
    contact: Mapping[str, object] | None,
    variables: Mapping[str, object] | None,
    unsubscribe_url: str,
    manage_url: str,
    view_in_browser_url: str,
) -> dict[str, object]:
    """The render context of one message.

    ``contact`` is the contact's fields, plus ``full_name``, plus ``attributes`` (the
    custom fields, a mapping), whose keys are also readable directly on ``contact`` when
    they do not clash with a field (``contact.plan`` is ``contact.attributes.plan``).
    ``data`` is the attributes overlaid with the per-message ``variables``, which are
    also available by name when they do not clash with the context's names. The three
    URLs come in snake_case and camelCase.
    """
    fields: dict[str, object] = dict(contact or {})
    raw_attributes = fields.get("attributes")
    attributes = dict(raw_attributes) if isinstance(raw_attributes, Mapping) else {}
    fields["attributes"] = attributes
    if "full_name" not in fields:
        names = (fields.get("first_name"), fields.get("last_name"))
        fields["full_name"] = " ".join(str(n) for n in names if n) or None
    contact_fields = {**attributes, **fields}
    message_variables = dict(variables or {})
    context: dict[str, object] = {
        name: value
        for name, value in message_variables.items()
        if name.isidentifier() and name not in CONTEXT_NAMES
    }
    context.update(
        contact=contact_fields,
        data={**attributes, **message_variables},
        unsubscribe_url=unsubscribe_url,
        manage_url=manage_url,
        view_in_browser_url=view_in_browser_url,
        unsubscribeUrl=unsubscribe_url,
        manageUrl=manage_url,
        viewInBrowserUrl=view_in_browser_url,
    )
    return context


def _render_field(
    field: str,
    template: Template,
    context: Mapping[str, Any],
    budget: RenderBudget,
    parts: list[str] | None = None,
) -> str:
    try:
        if parts is None:
            return render_limited(template, context, budget)
        parts.extend(render_limited_parts(template, context, budget))
        return "".join(parts)
    except Exception as error:  # any failure of user code is the template's problem
        raise _render_problem(field, error) from None


def _render_problem(field: str, error: Exception) -> TemplateProblem:
    problem: type[TemplateProblem] = TemplateRenderFailed
    message, code = f"{type(error).__name__}: {error}", "render_error"
    if isinstance(error, LimitHit):
        problem, message, code = RenderLimitExceeded, str(error), "render_limit"
    elif isinstance(error, RecursionError | MemoryError):
        problem, message, code = (
            RenderLimitExceeded,
            "the template nests too deeply",
            "render_limit",
        )
    elif isinstance(error, SecurityError):
        problem, message, code = UnsafeTemplate, str(error), "security"
    elif isinstance(error, UndefinedError):
        message, code = str(error), "undefined"
    return problem([TemplateError(field, message, template_line(error), None, code)])


def _one_line(text: str) -> str:
    # A subject or preview with line breaks from contact data must not break headers.
    return " ".join(text.split())


def render_content(
    compiled: CompiledContent,
    context: Mapping[str, object],
    *,
    limits: RenderLimits = DEFAULT_LIMITS,
    html_parts: list[str] | None = None,
) -> RenderedContent:
    """Render all parts for one recipient within ``limits`` (shared by all parts).

    Raises :class:`RenderLimitExceeded`, :class:`UnsafeTemplate` or
    :class:`TemplateRenderFailed`. Unknown variables render as empty strings.
    ``html_parts``, an empty list, receives the HTML in the chunks the template made
    (its own text and each value in turn); they join to the returned ``html``.
    """
    with budget_scope(limits) as budget:
        subject = _render_field("subject", compiled.subject_template, context, budget)
        html = _render_field("html", compiled.html_template, context, budget, html_parts)
        if compiled.text_template is not None:
            text = _render_field("text", compiled.text_template, context, budget)
        else:
            text = html_to_text(html)
        preheader = _render_field("preheader", compiled.preheader_template, context, budget)
    if budget.output * 4 > limits.max_output_bytes:  # only then can the bytes be over
        size = sum(len(part.encode()) for part in (subject, html, text, preheader))
        if size > limits.max_output_bytes:
            message = f"the output exceeds the limit of {limits.max_output_bytes} bytes"
            raise RenderLimitExceeded([TemplateError("html", message, None, None, "render_limit")])
    if compiled.text_generated:
        text = tidy_text(text)
    return RenderedContent(
        subject=_one_line(subject), html=html, text=text, preheader=_one_line(preheader)
    )


# --- versions ---------------------------------------------------------------------------


def diff_versions(a: Mapping[str, str | None], b: Mapping[str, str | None]) -> list[FieldDiff]:
    """A unified diff per field (the union of both versions' fields, in order)."""
    diffs: list[FieldDiff] = []
    for field in dict.fromkeys([*a, *b]):
        old = (a.get(field) or "").splitlines()
        new = (b.get(field) or "").splitlines()
        lines = list(
            difflib.unified_diff(old, new, fromfile=f"a/{field}", tofile=f"b/{field}", lineterm="")
        )
        added = sum(1 for line in lines[2:] if line.startswith("+"))
        removed = sum(1 for line in lines[2:] if line.startswith("-"))
        diffs.append(FieldDiff(field, bool(lines), "\n".join(lines), added, removed))
    return diffs
