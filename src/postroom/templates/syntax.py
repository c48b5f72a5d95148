"""Save-time checks of template sources: syntax errors with line and column, unsafe
attribute access, unsupported tags, and warnings for variables nobody will provide.

Jinja reports the line of a syntax error but not the column. The column is found from
what the error is about: the opening ``{{`` of an unterminated tag, the opening tag of an
unclosed block, the name of an unknown tag or filter, or the token the parser stopped on.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.lexer import Token
from jinja2.parser import Parser

from postroom.templates.errors import TemplateError, TemplateProblem, TemplateWarning
from postroom.templates.jinja_tags import JinjaTag, scan_jinja
from postroom.templates.sandbox import (
    HTML_ENVIRONMENT,
    TEXT_ENVIRONMENT,
    LimitedSandboxEnvironment,
)

# Names every message context provides (see rendering.build_context).
CONTEXT_NAMES = frozenset(
    {
        "contact",
        "data",
        "unsubscribe_url",
        "manage_url",
        "view_in_browser_url",
        "unsubscribeUrl",
        "manageUrl",
        "viewInBrowserUrl",
    }
)
# Fields of ``contact`` that are not flagged as unknown. Free-form contact data lives
# under ``contact.attributes`` (and ``data``), which is never flagged.
CONTACT_FIELDS = frozenset(
    {
        "id",
        "email",
        "first_name",
        "last_name",
        "full_name",
        "phone",
        "attributes",
        "locale",
        "timezone",
        "status",
        "created_at",
    }
)
_JINJA_NAMES = frozenset({"self", "loop", "caller", "varargs", "kwargs", "super"})
# Tags whose block needs an end tag, for finding the one left open.
_BLOCK_TAGS = frozenset(
    {"for", "if", "macro", "call", "filter", "block", "with", "autoescape", "trans", "set"}
)


@dataclass(frozen=True, slots=True)
class ParsedField:
    field: str
    source: str
    ast: nodes.Template


def parse_field(
    environment: LimitedSandboxEnvironment, field: str, source: str, *, compile: bool = True
) -> ParsedField:
    """Parse and check one field; raises :class:`FieldError` on the first error.

    ``compile`` also compiles it, which finds the rare errors only the compiler reports
    (a block defined twice...); unknown filters and tests are found without it.
    """
    parser: Parser | None = None
    try:
        # The parser is made by hand to see the token it stopped on, for the column.
        parser = Parser(environment, source)
        ast = parser.parse()
        _check_nodes(field, source, ast, environment)
        if compile:  # from the source: compiling rewrites the tree (see the sandbox)
            environment.compile(source)
    except TemplateSyntaxError as error:
        current = parser.stream.current if parser is not None else None
        raise FieldError(locate_syntax_error(field, source, error, current)) from None
    return ParsedField(field, source, ast)


def _fields(
    subject: str, html: str, text: str | None, preheader: str | None
) -> list[tuple[str, str, LimitedSandboxEnvironment]]:
    fields = [("subject", subject, TEXT_ENVIRONMENT), ("html", html, HTML_ENVIRONMENT)]
    if text is not None:
        fields.append(("text", text, TEXT_ENVIRONMENT))
    if preheader is not None:
        fields.append(("preheader", preheader, TEXT_ENVIRONMENT))
    return fields


def parse_fields(
    subject: str, html: str, text: str | None, preheader: str | None, *, compile: bool
) -> list[tuple[ParsedField, LimitedSandboxEnvironment]]:
    """Parse the fields of a version (``text``/``preheader`` when given); raise
    :class:`TemplateProblem` with the first error of each field that has one."""
    parsed: list[tuple[ParsedField, LimitedSandboxEnvironment]] = []
    errors: list[TemplateError] = []
    for field, source, environment in _fields(subject, html, text, preheader):
        try:
            parsed.append((parse_field(environment, field, source, compile=compile), environment))
        except FieldError as error:
            errors.append(error.error)
    if errors:
        raise TemplateProblem(errors)
    return parsed


class FieldError(Exception):
    """The first error of one field."""

    def __init__(self, error: TemplateError) -> None:
        super().__init__(error.message)
        self.error = error


def _check_nodes(
    field: str, source: str, ast: nodes.Template, environment: LimitedSandboxEnvironment
) -> None:
    for statement in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        keyword = type(statement).__name__.lower().replace("fromimport", "from")
        line, column = _find_on_line(source, statement.lineno, rf"\b{keyword}\b")
        message = f"'{keyword}' is not supported in email templates"
        raise FieldError(TemplateError(field, message, line, column, "unsupported_tag"))
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        if not isinstance(node, nodes.Filter | nodes.Test):
            continue
        is_filter = isinstance(node, nodes.Filter)
        if node.name in (environment.filters if is_filter else environment.tests):
            continue
        kind = "filter" if is_filter else "test"
        error = TemplateSyntaxError(f"No {kind} named '{node.name}'.", node.lineno)
        raise FieldError(locate_syntax_error(field, source, error, None))
    for name, lineno in _internal_names(ast):
        line, column = _find_on_line(source, lineno, re.escape(name))
        message = f"access to '{name}' is not allowed (it reaches Python internals)"
        raise FieldError(TemplateError(field, message, line, column, "unsafe_attribute"))


def _internal_names(ast: nodes.Template) -> Iterator[tuple[str, int]]:
    """Attribute names with ``__`` (dunders, mangled names) used in the template.

    Only these are refused at save time: a single leading underscore may be a key of the
    message data (``data._id``); on other objects the sandbox refuses it when rendering.
    """
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            name: object = node.attr
        elif isinstance(node, nodes.Getitem):
            name = node.arg.value if isinstance(node.arg, nodes.Const) else None
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            first = node.args[0]
            name = first.value if isinstance(first, nodes.Const) else None
        else:
            continue
        if isinstance(name, str) and "__" in name:
            yield name, node.lineno


# --- where a syntax error is ---------------------------------------------------------------


def _line_and_column(source: str, offset: int) -> tuple[int, int]:
    line_start = source.rfind("\n", 0, offset) + 1
    return source.count("\n", 0, offset) + 1, offset - line_start + 1


def _line_span(source: str, line: int) -> tuple[int, int]:
    start = 0
    for _ in range(line - 1):
        found = source.find("\n", start)
        if found < 0:
            return len(source), len(source)
        start = found + 1
    end = source.find("\n", start)
    return start, len(source) if end < 0 else end


def _find_on_line(source: str, line: int, pattern: str) -> tuple[int, int | None]:
    """Line and column of the first match of ``pattern`` inside a Jinja tag on ``line``."""
    start, end = _line_span(source, line)
    for tag in scan_jinja(source):
        if tag.end <= start or tag.start > end:
            continue
        match = re.compile(pattern).search(source, max(tag.start, start), min(tag.end, end))
        if match is not None:
            return _line_and_column(source, match.start())
    return line, None


def locate_syntax_error(
    field: str, source: str, error: TemplateSyntaxError, current: Token | None
) -> TemplateError:
    message = error.message or str(error)
    line = error.lineno
    column: int | None
    tags = scan_jinja(source)
    if char := re.match(r"unexpected char .* at (\d+)$", message):
        found_line, column = _line_and_column(source, int(char.group(1)))
        return TemplateError(field, message, found_line, column, "syntax_error")
    unterminated = next((tag for tag in tags if not tag.terminated), None)
    if unterminated is not None:
        opener = unterminated.source[:2]
        found_line, column = _line_and_column(source, unterminated.start)
        text = f"'{opener}' is never closed ({message})"
        return TemplateError(field, text, found_line, column, "unclosed_tag")
    unclosed = re.search(r"innermost block that needs to be closed is '(\w+)'", message)
    if unclosed and message.startswith("Unexpected end of template"):
        opener_tag = _unclosed_block(tags, unclosed.group(1))
        if opener_tag is not None:
            found_line, column = _line_and_column(source, opener_tag.start)
            text = f"'{opener_tag.source}' is never closed ({message})"
            return TemplateError(field, text, found_line, column, "unclosed_block")
    for regex, template, code in (
        (r"Encountered unknown tag '(\w+)'", r"\{{%[-+]?\s*({})\b", "unknown_tag"),
        (r"No filter named '(\w+)'", r"\|\s*({})\b", "unknown_filter"),
        (r"No test named '(\w+)'", r"\bis\s+(?:not\s+)?({})\b", "unknown_test"),
    ):
        if named := re.match(regex, message):
            pattern = template.format(re.escape(named.group(1)))
            found_line, column = _find_group_on_line(source, line, pattern)
            return TemplateError(field, message, found_line, column, code)
    column = None
    if current is not None and current.lineno == line and current.value:
        word = re.escape(str(current.value))
        pattern = rf"\b{word}\b" if str(current.value).isidentifier() else word
        line, column = _find_on_line(source, line, pattern)
    if column is None:
        line, column = _find_on_line(source, line, r"\{[{%#]")
    return TemplateError(field, message, line, column, "syntax_error")


def _find_group_on_line(source: str, line: int, pattern: str) -> tuple[int, int | None]:
    found_line, column = _find_on_line(source, line, pattern)
    if column is None:
        return found_line, None
    start, _ = _line_span(source, found_line)
    match = re.compile(pattern).search(source, start + column - 1)
    if match is None:
        return found_line, column
    return _line_and_column(source, match.start(1))


def _unclosed_block(tags: list[JinjaTag], name: str) -> JinjaTag | None:
    open_blocks: list[JinjaTag] = []
    for tag in tags:
        keyword = tag.keyword
        if tag.kind != "block" or not keyword:
            continue
        if keyword in _BLOCK_TAGS and not (keyword == "set" and "=" in tag.source):
            open_blocks.append(tag)
        elif keyword.startswith("end") and keyword[3:] in _BLOCK_TAGS:
            for index in range(len(open_blocks) - 1, -1, -1):
                if open_blocks[index].keyword == keyword[3:]:
                    del open_blocks[index:]
                    break
    return next((tag for tag in reversed(open_blocks) if tag.keyword == name), None)


# --- variables nobody provides --------------------------------------------------------------


def unknown_variable_warnings(
    parsed: ParsedField, environment: LimitedSandboxEnvironment, declared: Collection[str]
) -> list[TemplateWarning]:
    """Warnings for names outside the message context, and unknown ``contact`` fields."""
    undeclared = meta.find_undeclared_variables(parsed.ast)
    known = CONTEXT_NAMES | _JINJA_NAMES | set(environment.globals) | set(declared)
    warnings: list[TemplateWarning] = []
    for name in sorted(undeclared - known):
        lineno = next((n.lineno for n in parsed.ast.find_all(nodes.Name) if n.name == name), None)
        line, column = (None, None)
        if lineno is not None:
            line, column = _find_on_line(parsed.source, lineno, rf"\b{re.escape(name)}\b")
        message = f"'{name}' is not a known variable: it will render as an empty string"
        warnings.append(TemplateWarning(parsed.field, message, line, column, "unknown_variable"))
    if "contact" in undeclared:
        warnings.extend(_unknown_contact_fields(parsed, declared))
    return warnings


def _unknown_contact_fields(
    parsed: ParsedField, declared: Collection[str]
) -> list[TemplateWarning]:
    warnings: list[TemplateWarning] = []
    seen: set[str] = set()
    for node in parsed.ast.find_all((nodes.Getattr, nodes.Getitem)):
        if not isinstance(node, nodes.Getattr | nodes.Getitem):
            continue
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name == "contact"):
            continue
        if isinstance(node, nodes.Getattr):
            attribute: object = node.attr
        else:
            attribute = node.arg.value if isinstance(node.arg, nodes.Const) else None
        if not isinstance(attribute, str) or attribute in CONTACT_FIELDS or attribute in seen:
            continue
        if f"contact.{attribute}" in declared:
            continue
        seen.add(attribute)
        line, column = _find_on_line(parsed.source, node.lineno, rf"\b{re.escape(attribute)}\b")
        message = (
            f"'contact.{attribute}' is not a contact field nor a declared variable: it is "
            f"empty unless the contact has an attribute '{attribute}' "
            f"(also readable as 'contact.attributes.{attribute}')"
        )
        warnings.append(
            TemplateWarning(parsed.field, message, line, column, "unknown_contact_field")
        )
    return warnings
