"""Domain errors and warnings of template checking, compiling and rendering."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TemplateError:
    """One problem in one field of a template. ``line`` and ``column`` are 1-based.

    ``code`` is stable for clients: ``syntax_error``, ``unclosed_tag``, ``unclosed_block``,
    ``unknown_tag``, ``unknown_filter``, ``unknown_test``, ``unsafe_attribute``,
    ``unsupported_tag``, ``render_limit``, ``security``, ``undefined``, ``render_error``,
    ``mjml_invalid``.
    """

    field: str
    message: str
    line: int | None
    column: int | None
    code: str


@dataclass(frozen=True, slots=True)
class TemplateWarning:
    """Something worth telling the author that does not stop saving: an unknown variable
    (``unknown_variable``, ``unknown_contact_field``), or CSS left un-inlined
    (``css_not_inlined``), or a text part that is generated per message
    (``text_generated_at_send``)."""

    field: str
    message: str
    line: int | None
    column: int | None
    code: str


class TemplateProblem(Exception):
    """A template cannot be saved, compiled or rendered; ``errors`` says why and where."""

    def __init__(self, errors: Iterable[TemplateError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(_describe(error) for error in self.errors))


class RenderLimitExceeded(TemplateProblem):
    """Rendering went past a limit: output size, time, loop iterations or nesting."""


class UnsafeTemplate(TemplateProblem):
    """The template tried to reach something the sandbox does not allow."""


class TemplateRenderFailed(TemplateProblem):
    """Rendering raised an error (for example calling an undefined value)."""


def _describe(error: TemplateError) -> str:
    where = error.field
    if error.line is not None:
        where += f":{error.line}"
        if error.column is not None:
            where += f":{error.column}"
    return f"{where}: {error.message}"
