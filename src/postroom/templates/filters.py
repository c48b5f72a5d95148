"""The sandbox's filters: Jinja's own, each wrapped with the render limits.

Every filter checks the deadline and has its result counted. Filters that can make
their result much larger than their input (``center``, ``indent``, ``join``, ``replace``,
``format``, escaping...) are refused before running when the estimated result is over
the limit, and filters that work per item (``sort``, ``map``...) count their items as
loop iterations. Two filters are added for the compiler's rewriting (see the sandbox):
the loop counter wrapped around every ``for`` iterable, and the checked ``~`` operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sized
from functools import wraps
from typing import Any

from jinja2 import pass_eval_context
from jinja2.exceptions import FilterArgumentError
from jinja2.nodes import EvalContext
from jinja2.runtime import Undefined, markup_join, str_join

from postroom.templates.limits import (
    LimitHit,
    RenderBudget,
    argument,
    check_printf,
    current_budget,
    estimate_replace,
    estimate_size,
    total_size,
)

LOOP_GUARD_FILTER = "_postroom_loop_guard"
CONCAT_FILTER = "_postroom_concat"

# Filters that turn their input into text, with how many output characters one input
# character can become at most (escaping '"' gives '&#34;', url-encoding 'é' gives 6).
_TEXT_FILTER_GROWTH = {
    "capitalize": 1,
    "center": 1,
    "e": 6,
    "escape": 6,
    "forceescape": 6,
    "format": 1,
    "indent": 1,
    "lower": 1,
    "pprint": 2,
    "replace": 1,
    "safe": 1,
    "string": 1,
    "striptags": 1,
    "title": 1,
    "tojson": 6,
    "trim": 1,
    "truncate": 1,
    "upper": 1,
    "urlencode": 9,
    "urlize": 4,
    "wordcount": 1,
    "wordwrap": 2,
    "xmlattr": 6,
}
# Filters that are slow per character (textwrap, regexes): longer inputs are refused,
# ``wordwrap(1)`` alone takes seconds on a megabyte.
_SLOW_FILTER_INPUT_LIMITS = {"wordwrap": 50_000, "urlize": 100_000}
# Filters whose argument is a count of generated items, limited like loop iterations.
_COUNT_ARGUMENTS = {"batch": (0, "linecount"), "slice": (0, "slices")}
# Filters that do Python-level work per item: their items count as loop iterations, so
# that ``huge_list|sort`` or ``huge_list|map("upper")|list`` is refused like a long loop.
_EAGER_ITEM_FILTERS = frozenset(
    {"dictsort", "groupby", "join", "list", "max", "min", "reverse", "sort", "sum"}
)
_LAZY_ITEM_FILTERS = frozenset(
    {"batch", "items", "map", "reject", "rejectattr", "select", "selectattr", "slice", "unique"}
)
_ITEM_FILTERS = _EAGER_ITEM_FILTERS | _LAZY_ITEM_FILTERS


def _precheck_filter(
    name: str, value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], budget: RenderBudget
) -> Any:
    """Refuse a filter call whose result would be too large; returns the value to filter."""
    growth = _TEXT_FILTER_GROWTH.get(name)
    if growth is not None:
        size = len(value) if isinstance(value, str) else estimate_size(value, budget.max_chars)
        budget.require(size * growth, f"the {name!r} filter")
        slow_limit = _SLOW_FILTER_INPUT_LIMITS.get(name)
        if slow_limit is not None and size > slow_limit:
            raise LimitHit(f"the {name!r} filter takes at most {slow_limit} characters")
    if name == "center":
        width = argument(args, kwargs, 0, "width", 80)
        if isinstance(width, int):
            budget.require(width, "the 'center' filter")
    elif name == "indent":
        width = argument(args, kwargs, 0, "width", 4)
        pad = width if isinstance(width, int) else len(str(width))
        lines = str(value).count("\n") + 1
        budget.require(len(str(value)) + pad * lines, "the 'indent' filter")
    elif name == "replace" and len(args) >= 2:
        budget.require(estimate_replace(str(value), args[0], args[1]), "the 'replace' filter")
    elif name == "wordwrap":
        wrapstring = argument(args, kwargs, 2, "wrapstring", None) or "\n"
        budget.require(len(str(value)) * (1 + len(str(wrapstring))), "the 'wordwrap' filter")
    elif name == "format":
        check_printf(str(value), kwargs or args, budget)
    elif name == "tojson":
        indent = argument(args, kwargs, 0, "indent", None)
        if indent is not None and len(str(indent)) > 2:
            raise LimitHit("the 'tojson' filter takes an indent of at most 99")
    elif name in _COUNT_ARGUMENTS:
        index, arg_name = _COUNT_ARGUMENTS[name]
        count = argument(args, kwargs, index, arg_name, 0)
        if isinstance(count, int) and count > budget.limits.max_loop_iterations:
            raise LimitHit(f"the {name!r} filter would make more than the allowed item count")
    elif name in {"join", "sum"}:
        value = [] if isinstance(value, Undefined) else list(value)
        extra = argument(args, kwargs, 0, "d", "") if name == "join" else None
        size = total_size(value, budget.max_chars)
        separators = len(str(extra)) * len(value) if extra else 0
        if name == "join" or any(isinstance(i, str | list | tuple) for i in value):
            budget.require(size + separators, f"the {name!r} filter")
    return value


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter with the deadline, size precheck and result accounting."""
    # Filters marked pass_context/pass_eval_context/pass_environment get that object
    # first; the filtered value comes after it.
    offset = 1 if hasattr(func, "jinja_pass_arg") else 0
    checked = name in _TEXT_FILTER_GROWTH or name in _COUNT_ARGUMENTS or name in _ITEM_FILTERS

    @wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.check_time()
        if len(args) > offset:
            value = args[offset]
            if name in _EAGER_ITEM_FILTERS and isinstance(value, Sized):
                budget.count_items(len(value))
            value = _precheck_filter(name, value, args[offset + 1 :], kwargs, budget)
            args = (*args[:offset], value, *args[offset + 1 :])
        result = func(*args, **kwargs)
        if name in _LAZY_ITEM_FILTERS:
            return budget.iterate(result)
        return budget.charge(result)

    @wraps(func)
    def counted(*args: Any, **kwargs: Any) -> Any:
        # Filters that cannot grow their input (default, length, first...): only the
        # clock and the result size, which keeps common merge tags cheap.
        budget = current_budget()
        budget.check_time()
        return budget.charge(func(*args, **kwargs))

    return guarded if checked else counted


def _default_filter(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """``default``, also for values that are present but empty (None, "", whitespace).

    ``{{ contact.first_name | default("there") }}`` must greet "there" when the contact
    has no first name, which the database stores as NULL or "".
    """
    if (
        isinstance(value, Undefined)
        or value is None
        or (isinstance(value, str) and not value.strip())
        or (boolean and not value)
    ):
        return default_value
    return value


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    """Jinja's ``format`` filter (printf style); its size is checked by the precheck."""
    if args and kwargs:
        raise FilterArgumentError("can't handle positional and keyword arguments at the same time")
    return str(value) % (kwargs or args)


def _loop_guard(iterable: Any) -> Iterator[Any]:
    return current_budget().iterate(iterable)


@pass_eval_context
def _guarded_concat_filter(eval_ctx: EvalContext, items: list[Any]) -> str:
    """The ``~`` operator, with its result size checked before it is built."""
    budget = current_budget()
    budget.require(total_size(items, budget.max_chars), "the '~' operator")
    joined = markup_join(items) if eval_ctx.autoescape else str_join(items)
    budget.charge(joined)
    return joined


def guarded_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The filters of a sandboxed environment: ``filters`` guarded, ``default`` and
    ``format`` replaced, and the two compiler filters added."""
    replaced = {
        **filters,
        "default": _default_filter,
        "d": _default_filter,
        "format": _format_filter,
    }
    guarded = {name: _guard_filter(name, func) for name, func in replaced.items()}
    guarded[LOOP_GUARD_FILTER] = _loop_guard
    guarded[CONCAT_FILTER] = _guarded_concat_filter
    return guarded
