"""The Jinja sandbox that renders email templates, with limits on size, time and loops.

Templates are written by users of the platform, so a template must never be able to read
server internals or exhaust the worker. On top of Jinja's ``ImmutableSandboxedEnvironment``
(which already blocks ``_``-prefixed attributes and mutation of lists and dicts) this
environment:

* raises :class:`jinja2.exceptions.SecurityError` on any unsafe attribute access instead
  of quietly rendering an empty string, so payloads are reported;
* checks, before the value is built, every way a template can build a large value: the
  ``* ** % +`` operators, ``~`` (rewritten at compile time into a checked filter),
  buffered blocks such as ``{% set %}`` and macros (through ``Environment.concat``),
  string methods such as ``center`` or ``join``, ``str.format`` and amplifying filters;
* counts loop iterations (every ``for`` iterable is wrapped in a counting filter at compile
  time) and checks the deadline from the loops, calls, filters and output stream.

The per-render counters (:class:`~postroom.templates.limits.RenderBudget`) live in a
context variable set by :func:`~postroom.templates.limits.budget_scope`, because Jinja
calls the hooks without our own context. Outside a scope the default limits apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from jinja2 import ChainableUndefined, Template, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from postroom.templates.filters import CONCAT_FILTER, LOOP_GUARD_FILTER, guarded_filters
from postroom.templates.limits import (
    LimitHit,
    RenderBudget,
    check_binop,
    check_str_format,
    check_str_method,
    current_budget,
    estimate_size,
)

# --- hooks and globals -------------------------------------------------------------------


def _guarded_concat(parts: Any) -> str:
    """``Environment.concat``: joins the buffers of ``{% set %}`` blocks, macros, filters."""
    budget = current_budget()
    parts = parts if isinstance(parts, list) else list(parts)
    budget.require(sum(map(len, parts)), "a block of output")
    joined = "".join(parts)
    budget.charge(joined)
    return joined


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if not (0 <= n <= 20 and 1 <= min <= max <= 100):
        raise LimitHit("lipsum() is limited to 20 paragraphs of 1 to 100 words")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


class _BoundedNamespace(Namespace):
    """``namespace()``: the only way a loop can carry values over to later iterations,
    so what it holds is measured on each assignment."""

    def __setitem__(self, name: str, value: Any) -> None:
        budget = current_budget()
        if estimate_size(value, budget.max_work) > budget.max_work:
            raise LimitHit("a namespace value grew too large")
        super().__setitem__(name, value)


def _finalize(value: Any) -> Any:
    """Print None as nothing, and refuse to print containers too large to print."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict | set | frozenset):
        budget = current_budget()
        budget.require(estimate_size(value, budget.max_chars), "printing a value")
    return value


# --- compile-time rewriting ---------------------------------------------------------------


def _filter_node(node: nodes.Node, name: str) -> nodes.Filter:
    wrapped = nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)
    return wrapped


class _GuardInserter(NodeTransformer):
    """Wraps every ``for`` iterable in the loop counter and every ``~`` in a checked join."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        already = isinstance(node.iter, nodes.Filter) and node.iter.name == LOOP_GUARD_FILTER
        if not already:
            node.iter = _filter_node(node.iter, LOOP_GUARD_FILTER)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _filter_node(nodes.List(node.nodes, lineno=node.lineno), CONCAT_FILTER)


class _GuardedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _GuardInserter().visit(node)
        node.set_environment(self.environment)
        super().visit_Template(node, frame)


# --- the environment ----------------------------------------------------------------------


class LimitedSandboxEnvironment(ImmutableSandboxedEnvironment):
    """Immutable sandbox with size, time and loop limits (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, *, autoescape: bool, trim_blocks: bool = False) -> None:
        super().__init__(
            autoescape=autoescape,
            trim_blocks=trim_blocks,
            lstrip_blocks=trim_blocks,
            undefined=ChainableUndefined,
            finalize=_finalize,
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=0,
        )
        self.concat = _guarded_concat  # type: ignore[method-assign]
        self.filters = guarded_filters(self.filters)
        self.globals["lipsum"] = _bounded_lipsum
        self.globals["namespace"] = _BoundedNamespace

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        check_binop(operator, left, right, budget)
        try:
            result = self.binop_table[operator](left, right)
        except OverflowError as error:
            raise LimitHit(f"a number is too large ({error})") from None
        return budget.charge(result)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Plain dicts (contact, data) resolve keys before methods, so an attribute named
        # "items" or "values" reads the data instead of the dict method. Keys are data, so
        # this cannot reach anything unsafe. It also skips an AttributeError per lookup.
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is not allowed"
        )

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        sandboxed = super().wrap_str_format(value)
        if sandboxed is None:
            return None
        template: str = value.__self__
        is_format_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            budget = current_budget()
            if is_format_map:
                mapping = args[0] if args and isinstance(args[0], Mapping) else {}
                check_str_format(template, (), mapping, budget)
            else:
                check_str_format(template, args, kwargs, budget)
            result = sandboxed(*args, **kwargs)
            budget.charge(result)
            return result

        return checked

    def call(
        __self,
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        budget = current_budget()
        budget.check_time()
        args = check_str_method(__obj, args, kwargs, budget)
        budget.enter_call()
        try:
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.leave_call()
        return budget.charge(result)


HTML_ENVIRONMENT = LimitedSandboxEnvironment(autoescape=True)
TEXT_ENVIRONMENT = LimitedSandboxEnvironment(autoescape=False)
# For text parts generated from HTML, where block tags stand alone on their lines: a
# loop over table rows must give one line per row, not a blank line between rows.
GENERATED_TEXT_ENVIRONMENT = LimitedSandboxEnvironment(autoescape=False, trim_blocks=True)


# --- rendering -----------------------------------------------------------------------------


# Per template, what every render of it needs: its globals as a plain dict (a template's
# globals are a ChainMap, and merging one into each render's context walks it in Python),
# and the output of a template without any tag (an empty preheader...), rendered once.
_PREPARED_ATTRIBUTE = "_postroom_prepared"


def _prepared(template: Template) -> tuple[dict[str, Any], str | None]:
    prepared: tuple[dict[str, Any], str | None] | None = getattr(
        template, _PREPARED_ATTRIBUTE, None
    )
    if prepared is None:
        prepared = (dict(template.globals), None)
        setattr(template, _PREPARED_ATTRIBUTE, prepared)
    return prepared


def mark_constant(template: Template, source: str) -> None:
    """Remember the output of a template whose source has no Jinja syntax at all, so
    rendering it costs nothing per recipient (it is still counted against the limits)."""
    if "{" in source:  # every tag and comment starts so (line statements are off)
        return
    flat_globals = _prepared(template)[0]
    output = "".join(template.root_render_func(_new_context(template, {}, flat_globals)))
    setattr(template, _PREPARED_ATTRIBUTE, (flat_globals, output))


def _new_context(
    template: Template, context: Mapping[str, Any], flat_globals: dict[str, Any]
) -> Context:
    """``template.new_context(dict(context))`` without walking the globals' ChainMap: the
    same parent mapping (globals overlaid with the context) and the same globals keys."""
    environment = template.environment
    return environment.context_class(
        environment,
        {**flat_globals, **context},
        template.name,
        template.blocks,
        globals=flat_globals,
    )


def render_limited(template: Template, context: Mapping[str, Any], budget: RenderBudget) -> str:
    """Render by streaming, counting the output and watching the clock between chunks.

    This is ``Template.generate`` without its extra generator layer: the root render
    function is driven directly and errors go through the same ``handle_exception``
    (which rewrites tracebacks to template lines).
    """
    return "".join(render_limited_parts(template, context, budget))


# The clock is read once per this many characters of output (and by every loop, call and
# filter on its own): a chunk is template text or one value, each cheap to produce.
_CLOCK_EVERY_CHARS = 16_384


def render_limited_parts(
    template: Template, context: Mapping[str, Any], budget: RenderBudget
) -> list[str]:
    """:func:`render_limited` without the final join: the chunks as the template made
    them (its own text and each value in turn), for callers that work chunk by chunk."""
    flat_globals, constant = _prepared(template)
    if constant is not None:
        budget.add_output(len(constant))
        budget.check_time()
        return [constant]
    parts: list[str] = []
    append = parts.append
    room = budget.max_chars - budget.output
    deadline = budget.deadline
    clock = time.monotonic
    size = 0
    next_clock = min(_CLOCK_EVERY_CHARS, room)
    stream = template.root_render_func(_new_context(template, context, flat_globals))
    try:
        for chunk in stream:
            append(chunk)
            size += len(chunk)
            if size > next_clock:
                next_clock = min(size + _CLOCK_EVERY_CHARS, room)
                if size > room or clock() > deadline:
                    budget.add_output(size)
                    budget.check_time()
    except Exception:
        template.environment.handle_exception()
    finally:
        close = getattr(stream, "close", None)  # a generator: release its frame now
        if close is not None:
            close()
    budget.add_output(size)
    budget.check_time()
    return parts


def template_line(error: BaseException) -> int | None:
    """The template line an exception was raised on (Jinja rewrites the traceback so that
    template frames carry template line numbers under the file name ``<template>``)."""
    line = None
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == "<template>":
            line = trace.tb_lineno
        trace = trace.tb_next
    return line
