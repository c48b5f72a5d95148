"""Render limits for user templates: the per-render budget and the size estimates.

Every check here runs *before* a value is built, from an estimate of its size, so that a
template such as ``{{ 'x' * 10**9 }}`` fails in microseconds instead of allocating a
gigabyte first. The sandbox (:mod:`postroom.templates.sandbox`) calls these checks from
its operator, call, filter and loop hooks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from string import Formatter

from jinja2.runtime import Undefined

# Integers beyond this many bits are refused: they only arise from arithmetic bombs such
# as ``9**(9**9)``, and Python refuses to print ints over 4300 digits (~14000 bits) anyway.
MAX_INT_BITS = 8192
# Cumulative characters a render may build in intermediate values, as a multiple of the
# output limit: real templates stay far below, loops that rebuild big strings do not.
WORK_FACTOR = 8
# How often (in loop iterations) the deadline is checked; a clock read costs ~50 ns.
DEADLINE_CHECK_EVERY = 16


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """Limits applied to one render of one message (all of its parts together).

    ``max_loop_iterations`` counts loop iterations and the items processed by filters
    such as ``sort`` or ``map``; ``max_calls`` counts calls of macros, methods and
    functions, and ``max_call_depth`` bounds their nesting.
    """

    max_output_bytes: int = 2_000_000
    max_render_seconds: float = 2.0
    max_loop_iterations: int = 100_000
    max_calls: int = 10_000
    max_call_depth: int = 64


DEFAULT_LIMITS = RenderLimits()


class LimitHit(Exception):
    """A template tried to go past a render limit (internal; the API wraps it)."""


class RenderBudget:
    """Counters for one render, checked by the sandbox hooks."""

    __slots__ = (
        "calls",
        "deadline",
        "depth",
        "iterations",
        "limits",
        "max_chars",
        "max_work",
        "output",
        "work",
    )

    def __init__(self, limits: RenderLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        # One character is at least one byte, so a character count over the byte limit
        # is already over; the exact byte count is taken at the end when it matters.
        self.max_chars = limits.max_output_bytes
        self.max_work = limits.max_output_bytes * WORK_FACTOR
        self.deadline = time.monotonic() + limits.max_render_seconds
        self.output = 0
        self.work = 0
        self.iterations = 0
        self.calls = 0
        self.depth = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitHit(f"rendering took longer than {self.limits.max_render_seconds:g} seconds")

    def require(self, estimated_chars: int, what: str) -> None:
        """Refuse to build a value estimated at more characters than the output limit."""
        if estimated_chars > self.max_chars:
            raise LimitHit(
                f"{what} would exceed the output limit of {self.limits.max_output_bytes} bytes"
            )

    def charge(self, value: object) -> object:
        """Count a freshly built value against the size and cumulative work limits."""
        if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
            size = len(value)
            if size > self.max_chars:
                self.require(size, "a value")
            self.work += size
            if self.work > self.max_work:
                raise LimitHit("the template builds too much intermediate text")
        return value

    def add_output(self, chars: int) -> None:
        self.output += chars
        if self.output > self.max_chars:
            raise LimitHit(f"the output exceeds the limit of {self.limits.max_output_bytes} bytes")

    def enter_call(self) -> None:
        # Calls are counted too: a macro that calls itself twice per level runs no loop
        # but makes 2**depth calls, each costing a few microseconds.
        self.calls += 1
        if self.calls > self.limits.max_calls:
            raise LimitHit(f"the template made more than {self.limits.max_calls} calls")
        self.depth += 1
        if self.depth > self.limits.max_call_depth:
            raise LimitHit(f"calls are nested deeper than {self.limits.max_call_depth} levels")

    def leave_call(self) -> None:
        self.depth -= 1

    def count_items(self, count: int) -> None:
        """Count items processed in bulk (by a filter) as loop iterations."""
        self.iterations += count
        if self.iterations > self.limits.max_loop_iterations:
            raise LimitHit(f"loops ran more than {self.limits.max_loop_iterations} iterations")
        self.check_time()

    def iterate(self, iterable: Iterable[object]) -> Iterator[object]:
        """Yield from ``iterable``, counting each item as a loop iteration."""
        limit = self.limits.max_loop_iterations
        for item in iterable:
            self.iterations += 1
            if self.iterations > limit:
                raise LimitHit(f"loops ran more than {limit} iterations")
            if not self.iterations % DEADLINE_CHECK_EVERY:
                self.check_time()
            yield item


# The budget of the render in progress. Jinja calls the sandbox hooks without any of our
# context, so they find the budget here.
_active_budget: ContextVar[RenderBudget | None] = ContextVar("postroom_render_budget", default=None)


def current_budget() -> RenderBudget:
    """The budget of the render in progress, or a fresh default one outside any render."""
    budget = _active_budget.get()
    return budget if budget is not None else RenderBudget(DEFAULT_LIMITS)


@contextmanager
def budget_scope(limits: RenderLimits = DEFAULT_LIMITS) -> Iterator[RenderBudget]:
    """Make a new budget the active one for the renders done inside the block."""
    budget = RenderBudget(limits)
    token = _active_budget.set(budget)
    try:
        yield budget
    finally:
        _active_budget.reset(token)


def estimate_size(value: object, limit: int) -> int:
    """Roughly how many characters ``str(value)`` would take; stops counting past ``limit``.

    Containers are walked (bounded by ``limit``) because ``str()`` of a list holding the
    same 2 MB string a million times is a terabyte, while the list itself is 8 MB.
    """
    total = 0
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, float | Undefined) or item is None:
            total += 24
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, range):
            total += 8 * len(item)
        else:
            total += 64
        if total > limit:
            return total
    return total


def total_size(items: Iterable[object], limit: int) -> int:
    """The summed :func:`estimate_size` of ``items``, stopping once past ``limit``."""
    total = 0
    for item in items:
        total += estimate_size(item, limit)
        if total > limit:
            break
    return total


def _digits(text: str | None, limit: int) -> int:
    """An integer from a run of digits, saturating past ``limit`` (no 10**6-digit ints)."""
    if not text:
        return 0
    return int(text) if len(text) <= 9 else limit + 1


def _values_of(args: object) -> list[object]:
    if isinstance(args, Mapping):
        return list(args.values())
    if isinstance(args, tuple):
        return list(args)
    return [args]


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def check_printf(fmt: str, args: object, budget: RenderBudget) -> None:
    """Refuse ``fmt % args`` when its result would be too large (``'%999999999s'``)."""
    values = _values_of(args)
    widest = max((estimate_size(v, budget.max_chars) for v in values), default=0)
    star = max((v for v in values if isinstance(v, int)), default=0)
    total = len(fmt)
    for match in _PRINTF_SPEC.finditer(fmt):
        width = star if match.group(1) == "*" else _digits(match.group(1), budget.max_chars)
        precision = star if match.group(2) == "*" else _digits(match.group(2), budget.max_chars)
        total += max(width, precision, widest)
        budget.require(total, "string formatting")


def check_str_format(
    fmt: str, args: tuple[object, ...], kwargs: Mapping[str, object], budget: RenderBudget
) -> None:
    """Refuse ``fmt.format(...)`` when its result would be too large (``'{:>999999999}'``)."""
    values = [*args, *kwargs.values()]
    widest = max((estimate_size(v, budget.max_chars) for v in values), default=0)
    total = len(fmt)
    for _literal, field, spec, _conversion in Formatter().parse(fmt):
        if field is None:
            continue
        sizes = [widest, *(_digits(d, budget.max_chars) for d in re.findall(r"\d+", spec or ""))]
        if spec and "{" in spec:  # nested width such as '{:{}}' comes from the arguments
            sizes.extend(v for v in values if isinstance(v, int))
        total += max(sizes)
        budget.require(total, "string formatting")


def check_binop(operator: str, left: object, right: object, budget: RenderBudget) -> None:
    """Refuse ``left <operator> right`` when the result would be too large."""
    sequence = (str, bytes, list, tuple)
    if operator == "*":
        if isinstance(left, sequence) and isinstance(right, int):
            budget.require(len(left) * max(right, 0), "repeating a value")
        elif isinstance(right, sequence) and isinstance(left, int):
            budget.require(len(right) * max(left, 0), "repeating a value")
        elif isinstance(left, int) and isinstance(right, int):
            _require_int_bits(abs(left).bit_length() + abs(right).bit_length())
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            _require_int_bits(abs(left).bit_length() * right)
    elif operator == "+":
        if isinstance(left, sequence) and isinstance(right, sequence):
            budget.require(len(left) + len(right), "joining values")
        elif isinstance(left, int) and isinstance(right, int):
            _require_int_bits(max(abs(left).bit_length(), abs(right).bit_length()) + 1)
    elif operator == "%" and isinstance(left, str):
        check_printf(left, right, budget)


def _require_int_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise LimitHit(f"a number would be larger than {MAX_INT_BITS} bits")


def argument(
    args: tuple[object, ...], kwargs: Mapping[str, object], index: int, name: str, default: object
) -> object:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def check_str_method(
    method: object, args: tuple[object, ...], kwargs: Mapping[str, object], budget: RenderBudget
) -> tuple[object, ...]:
    """Check a call of a ``str``/``bytes`` method that can grow its result.

    Returns the positional arguments to use: the iterable given to ``join`` is turned
    into a list so that it can be measured without consuming it.
    """
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str | bytes):
        return args
    name = getattr(method, "__name__", "")
    if name in {"center", "ljust", "rjust", "zfill"}:
        width = argument(args, kwargs, 0, "width", 0)
        if isinstance(width, int):
            budget.require(width, f"{name}()")
    elif name == "expandtabs":
        tabsize = argument(args, kwargs, 0, "tabsize", 8)
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        if isinstance(tabsize, int):
            budget.require(len(owner) + tabs * tabsize, "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        budget.require(estimate_replace(owner, args[0], args[1]), "replace()")
    elif name == "join" and args:
        items = list(_iterable(args[0]))
        size = total_size(items, budget.max_chars)
        budget.require(size + len(owner) * len(items), "join()")
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((estimate_size(v, budget.max_chars) for v in args[0].values()), default=1)
        budget.require(len(owner) * longest, "translate()")
    return args


def estimate_replace(text: object, old: object, new: object) -> int:
    """Size of ``text.replace(old, new)`` without building it."""
    if isinstance(text, bytes) and isinstance(old, bytes) and isinstance(new, bytes):
        return estimate_replace(
            text.decode("latin-1"), old.decode("latin-1"), new.decode("latin-1")
        )
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return estimate_size(text, 1 << 62)  # replace() raises or stringifies: no growth
    occurrences = text.count(old) if old else len(text) + 1
    return len(text) + occurrences * max(len(new) - len(old), 0)


def _iterable(value: object) -> Iterable[object]:
    if isinstance(value, Iterable):
        return value
    raise TypeError(f"{type(value).__name__!r} object is not iterable")
