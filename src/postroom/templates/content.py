"""A version's content: checked at save, compiled at publish, rendered for a preview.

Glue between the stored versions and the pure rendering layer
(:mod:`postroom.templates.rendering`); everything here raises ``TemplateProblem`` for
a template that cannot be saved, compiled or rendered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from postroom.models.templates import TemplateVersion
from postroom.templates.errors import TemplateError, TemplateProblem, TemplateWarning
from postroom.templates.rendering import (
    CompiledContent,
    RenderedContent,
    check_syntax,
    compile_content,
    compile_content_cached,
    compile_mjml,
    render_content,
)
from postroom.templates.variables import SystemUrls, declared_names, message_context

# Unknown-variable warnings come from check_syntax, which knows the declared variables.
_VARIABLE_WARNINGS = frozenset({"unknown_variable", "unknown_contact_field"})


@dataclass(frozen=True, slots=True)
class VersionContent:
    subject: str
    html: str
    text: str | None = None
    preheader: str | None = None
    mjml: str | None = None
    locale: str = "en"
    variables: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, version: TemplateVersion) -> VersionContent:
        return cls(
            subject=version.subject,
            html=version.html,
            text=version.text,
            preheader=version.preheader,
            mjml=version.mjml,
            locale=version.locale,
            variables=list(version.variables or []),
        )

    def diffable(self) -> dict[str, str | None]:
        """The fields a diff compares, as text."""
        variables = "\n".join(
            f"{v['name']}: {v.get('type', 'string')} = {v.get('fallback')!r}"
            for v in self.variables
        )
        return {
            "subject": self.subject,
            "preheader": self.preheader,
            "html": self.html,
            "text": self.text,
            "mjml": self.mjml,
            "locale": self.locale,
            "variables": variables or None,
        }


@dataclass(frozen=True, slots=True)
class CompiledVersion:
    html: str  # the HTML template (from the MJML when there is MJML)
    compiled: CompiledContent
    warnings: list[TemplateWarning]


def _renamed(items: Iterable[Any], old: str, new: str) -> list[Any]:
    return [replace(item, field=new) if item.field == old else item for item in items]


def check_content(content: VersionContent) -> list[TemplateWarning]:
    """Save-time check of every field; the MJML source stands in for the HTML when
    there is one (its errors name the ``mjml`` field)."""
    source_field = "mjml" if content.mjml else "html"
    try:
        warnings = check_syntax(
            subject=content.subject,
            html=content.mjml or content.html,
            text=content.text,
            preheader=content.preheader,
            declared=declared_names(content.variables),
        )
    except TemplateProblem as problem:
        raise TemplateProblem(_renamed(problem.errors, "html", source_field)) from None
    return _renamed(warnings, "html", source_field)


def compile_version(kind: str, content: VersionContent) -> CompiledVersion:
    """Publish-time compilation: MJML to HTML, then footer, text part and CSS inlining."""
    warnings = check_content(content)
    html = compile_mjml(content.mjml) if content.mjml else content.html
    if not html.strip():
        raise TemplateProblem([TemplateError("html", "the HTML is empty", None, None, "empty")])
    compiled = compile_content(
        subject=content.subject,
        html=html,
        text=content.text,
        preheader=content.preheader,
        kind=kind,
    )
    extra = [w for w in compiled.warnings if w.code not in _VARIABLE_WARNINGS]
    return CompiledVersion(html=html, compiled=compiled, warnings=[*warnings, *extra])


def content_for_send(kind: str, version: TemplateVersion) -> CompiledContent:
    """The compiled content of a published version, cached per process: what sending
    renders for each recipient (the MJML was turned into ``html`` at publish)."""
    return compile_content_cached(
        subject=version.subject,
        html=version.html,
        text=version.text,
        preheader=version.preheader,
        kind=kind,
    )


@dataclass(frozen=True, slots=True)
class Preview:
    rendered: RenderedContent
    warnings: list[TemplateWarning]


def render_preview(
    kind: str,
    version: TemplateVersion,
    contact: Mapping[str, Any] | None,
    data: Mapping[str, Any],
    urls: SystemUrls,
) -> Preview:
    """Render any version (drafts are compiled as publishing would) for one contact
    and/or sample data. Raises ``TemplateProblem`` (limits included), never crashes."""
    content = VersionContent.of(version)
    if version.status == "draft":
        compiled_version = compile_version(kind, content)
        compiled, warnings = compiled_version.compiled, compiled_version.warnings
    else:
        compiled = content_for_send(kind, version)
        warnings = check_content(content)
    context = message_context(contact, data, content.variables, urls)
    rendered = render_content(compiled, context)
    return Preview(rendered=rendered, warnings=_unique(warnings))


def _unique(warnings: Sequence[TemplateWarning]) -> list[TemplateWarning]:
    return list(dict.fromkeys(warnings))
