"""Segments: the filter language (``schema``), checked (``validation``) into a typed tree
(``predicates``), compiled to one SQL WHERE clause (``compiler``, with ``json_sql`` and
``iso_dates``) and evaluated in Python (``evaluate``, the tests' oracle)."""

from postroom.contacts.segments.compiler import compile_filter, compile_predicate
from postroom.contacts.segments.evaluate import evaluate_filter
from postroom.contacts.segments.schema import (
    EVENT_OPERATORS,
    OPERATORS,
    FilterCondition,
    FilterGroup,
    FilterProblem,
    FilterRule,
    InvalidFilter,
    check_filter,
    filter_predicate,
    parse_filter,
    validate_filter,
)

__all__ = [
    "EVENT_OPERATORS",
    "OPERATORS",
    "FilterCondition",
    "FilterGroup",
    "FilterProblem",
    "FilterRule",
    "InvalidFilter",
    "check_filter",
    "compile_filter",
    "compile_predicate",
    "evaluate_filter",
    "filter_predicate",
    "parse_filter",
    "validate_filter",
]
