"""The segment filter language: parsing, every problem at its exact path, the ISO date
grammar, and the meaning the Python evaluator gives a filter (the SQL compiler is held to it
in tests/db/test_segment_compiler.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.contacts.segments import (
    EVENT_OPERATORS,
    FilterCondition,
    InvalidFilter,
    check_filter,
    evaluate_filter,
    filter_predicate,
    parse_filter,
)
from postroom.contacts.segments.iso_dates import Instant, parse_instant
from postroom.errors import ValidationFailed

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LIST_ID = "0190b6a0-0000-7000-8000-000000000001"


def rule(field: str, operator: str, value: Any = None, unit: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"field": field, "operator": operator, "value": value}
    if unit is not None:
        found["unit"] = unit
    return found


def one(field: str, operator: str, value: Any = None, unit: str | None = None) -> dict[str, Any]:
    return {"logic": "AND", "groups": [{"filters": [rule(field, operator, value, unit)]}]}


def problems_of(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter(data)
    return [(problem.field, problem.code) for problem in caught.value.problems]


def nested(levels: int) -> dict[str, Any]:
    condition: dict[str, Any] = one("email", "contains", "a")
    for _ in range(levels - 1):
        condition = {"groups": [{"filters": [], "conditions": condition}]}
    return condition


# --- parsing and problems -----------------------------------------------------------------


def test_the_mailglyph_example_parses_and_logic_defaults_to_and() -> None:
    condition = parse_filter(
        {
            "groups": [
                {
                    "filters": [
                        {"field": "data.plan", "operator": "equals", "value": "premium"},
                        {"field": "createdAt", "operator": "within", "value": 30, "unit": "days"},
                    ]
                }
            ]
        }
    )
    assert condition.logic == "AND"
    assert check_filter(condition) == []


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("firstName", "first_name"),
        ("lastName", "last_name"),
        ("created_at", "createdAt"),
        ("updated_at", "updatedAt"),
        ("attributes.plan", "data.plan"),
    ],
)
def test_aliases_name_the_same_field(alias: str, name: str) -> None:
    value = "2026-01-01" if "ted" in name else "x"
    operator = "greaterThan" if "ted" in name else "equals"
    assert filter_predicate(parse_filter(one(alias, operator, value))) == filter_predicate(
        parse_filter(one(name, operator, value))
    )


def test_every_problem_is_reported_at_its_path() -> None:
    data = {
        "logic": "XOR",
        "groups": [
            {
                "filters": [
                    rule("nope", "equals", 1),
                    rule("email", "like", "a"),
                    rule("data.score", "greaterThan", [1]),
                    rule("data.score", "between", [1]),
                    rule("createdAt", "within", -1),
                    rule("list", "in", [LIST_ID, "nope", 3]),
                    rule("email", "greaterThan", 1),
                    rule("data.x", "triggered"),
                ]
            },
            {
                "filters": [],
                "conditions": {
                    "logic": "OR",
                    "groups": [
                        {"filters": [rule("email", "contains", "a")]},
                        {"filters": [rule("data.n", "equals", None)]},
                    ],
                },
            },
            {"filters": []},
        ],
    }
    assert problems_of(data) == [
        ("logic", "invalid_logic"),
        ("groups.0.filters.0.field", "unknown_field"),
        ("groups.0.filters.1.operator", "unknown_operator"),
        ("groups.0.filters.2.value", "invalid_value"),
        ("groups.0.filters.3.value", "invalid_value"),
        ("groups.0.filters.4.unit", "invalid_unit"),
        ("groups.0.filters.4.value", "invalid_value"),
        ("groups.0.filters.5.value.1", "invalid_value"),
        ("groups.0.filters.5.value.2", "invalid_value"),
        ("groups.0.filters.6.operator", "operator_not_allowed"),
        ("groups.0.filters.7.operator", "operator_not_allowed"),
        ("groups.1.conditions.groups.1.filters.0.value", "invalid_value"),
        ("groups.2", "empty_group"),
    ]


@pytest.mark.parametrize(
    ("bad_rule", "path", "code"),
    [
        (rule("data.n", "greaterThan", "soon"), "value", "invalid_value"),
        (rule("data.n", "between", [1, "2024-01-01"]), "value", "invalid_value"),
        (rule("data.n", "between", [5, 1]), "value", "invalid_value"),
        (rule("data.n", "between", ["x", 1]), "value.0", "invalid_value"),
        (rule("createdAt", "within", 5), "unit", "invalid_unit"),
        (rule("createdAt", "within", 5, "weeks"), "unit", "invalid_unit"),
        (rule("createdAt", "within", 0, "days"), "value", "invalid_value"),
        (rule("createdAt", "within", True, "days"), "value", "invalid_value"),
        (rule("createdAt", "olderThan", 1e300, "days"), "value", "invalid_value"),
        (rule("createdAt", "equals", "2024-02-30"), "value", "invalid_value"),
        (rule("createdAt", "greaterThan", 1700000000), "value", "invalid_value"),
        (rule("list", "equals", "abc"), "value", "invalid_value"),
        (rule("status", "equals", "gone"), "value", "invalid_value"),
        (rule("subscribed", "equals", "yes"), "value", "invalid_value"),
        (rule("subscribed", "in", [True]), "operator", "operator_not_allowed"),
        (rule("email", "contains", ""), "value", "invalid_value"),
        (rule("email", "exists"), "operator", "operator_not_allowed"),
        (rule("firstName", "greaterThan", "a"), "operator", "operator_not_allowed"),
        (rule("data.n", "equals", {"a": 1}), "value", "invalid_value"),
        (rule("data.n", "in", []), "value", "invalid_value"),
        (rule("data.n", "in", ["ok", [1]]), "value.1", "invalid_value"),
        (rule("data.n", "equals", 2**60), "value", "invalid_value"),
        (rule("data.n", "equals", float("nan")), "value", "invalid_value"),
        (rule("data.n", "equals", "x" * 1001), "value", "invalid_value"),
        (rule('data.a"b', "equals", 1), "field", "invalid_attribute_key"),
        (rule("data.café", "equals", 1), "field", "invalid_attribute_key"),
        (rule("data.", "exists"), "field", "invalid_attribute_key"),
        (rule("event.purchase", "equals", 1), "operator", "operator_not_allowed"),
        (rule("event. padded", "triggered"), "field", "invalid_event_name"),
        (rule("email.opened", "triggeredWithin", 3), "unit", "invalid_unit"),
        (rule("event.signup", "triggered") | {"campaign": LIST_ID}, "campaign", "invalid_campaign"),
        (rule("email.sent", "triggered") | {"campaign": "nope"}, "campaign", "invalid_campaign"),
    ],
)
def test_bad_values_are_named(bad_rule: dict[str, Any], path: str, code: str) -> None:
    data = {"groups": [{"filters": [rule("email", "contains", "a"), bad_rule]}]}
    assert problems_of(data) == [(f"groups.0.filters.1.{path}", code)]


def test_shape_errors_become_problems_too() -> None:
    assert problems_of({"groups": [{"filters": [{"field": "email"}]}]}) == [
        ("groups.0.filters.0.operator", "missing")
    ]
    assert problems_of({"groups": "all"}) == [("groups", "list_type")]
    assert problems_of({"groups": []}) == [("groups", "empty")]


def test_conditions_nest_five_levels_deep_at_most() -> None:
    assert check_filter(FilterCondition.model_validate(nested(5))) == []
    deep = "groups.0.conditions." * 4 + "groups.0.conditions"
    assert problems_of(nested(6)) == [(deep, "too_deep")]


def test_a_filter_holds_one_hundred_conditions_at_most() -> None:
    rules = [rule("email", "contains", "a")] * 50
    fits = {"groups": [{"filters": rules}, {"filters": rules}]}
    assert check_filter(FilterCondition.model_validate(fits)) == []
    over = {"groups": [{"filters": rules}, {"filters": [*rules, rules[0]]}]}
    assert problems_of(over) == [("groups", "too_many_filters")]


def test_event_operators_apply_to_event_fields_only() -> None:
    assert {
        "triggered",
        "triggeredWithin",
        "triggeredOlderThan",
        "notTriggered",
        "notTriggeredWithin",
    } == EVENT_OPERATORS
    with pytest.raises(InvalidFilter) as caught:
        parse_filter(one("data.x", "triggeredWithin", 3, "days"))
    assert "event" in caught.value.problems[0].message
    parse_filter(one("event.signup", "triggeredWithin", 3, "days"))
    parse_filter(one("email.opened", "notTriggered"))


def test_invalid_filter_is_a_validation_error_that_can_be_moved_under_a_prefix() -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter(one("nope", "equals", 1))
    assert isinstance(caught.value, ValidationFailed)
    moved = caught.value.prefixed("filter")
    assert [p.field for p in moved.problems] == ["filter.groups.0.filters.0.field"]


# --- ISO dates ----------------------------------------------------------------------------


offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@given(
    moment=st.datetimes(
        min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets
    ),
    spec=st.sampled_from(["seconds", "milliseconds", "microseconds"]),
    separator=st.sampled_from(["T", " "]),
)
def test_the_date_grammar_reads_what_isoformat_writes(
    moment: datetime, spec: str, separator: str
) -> None:
    text = moment.isoformat(sep=separator, timespec=spec)
    if spec == "milliseconds":
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    elif spec == "seconds":
        moment = moment.replace(microsecond=0)
    assert parse_instant(text) == (Instant.from_datetime(moment), False)
    assert parse_instant(text.replace("+00:00", "Z")) == (Instant.from_datetime(moment), False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-01 10:00:00.5", datetime(2024, 5, 1, 10, 0, 0, 500_000, tzinfo=UTC)),
        ("2000-02-29", datetime(2000, 2, 29, tzinfo=UTC)),
        ("1900-02-29", None),
        ("2024-04-31", None),
        ("2024-05-01T24:00:00Z", None),
        ("2024-05-01T10:00Z", None),
        ("2024-05-01T10:00:00.1234567Z", None),
        ("2024-05-01T10:00:00+24:00", None),
        ("2024-05-01Z", None),
        ("2024-05-01\n", None),
        ("0000-01-01", None),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("0001-01-01T05:00:00+01:00", None),  # with an offset, years 0002-9998
        ("9999-12-31T23:59:59.999999+00:00", datetime(9999, 12, 31, 23, 59, 59, 999999, UTC)),
        ("2024-5-1", None),
    ],
)
def test_the_date_grammar(text: str, expected: datetime | None) -> None:
    parsed = parse_instant(text)
    assert (parsed[0].to_datetime() if parsed else None) == expected


# --- what a filter means (the evaluator) ----------------------------------------------------


def contact(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "email": "Ann@Example.org",
        "email_key": "ann@example.org",
        "status": "subscribed",
        "first_name": None,
        "last_name": None,
        "locale": None,
        "timezone": None,
        "created_at": NOW - timedelta(days=2),
        "updated_at": NOW,
        "attributes": {},
    }
    return base | fields


def matches(data: dict[str, Any], person: dict[str, Any], lists: set[str] | None = None) -> bool:
    return evaluate_filter(parse_filter(data), person, now=NOW, list_ids=lists or set())


def test_negative_operators_match_missing_and_null_values() -> None:
    missing, null = contact(), contact(first_name=None, attributes={"plan": None})
    for person in (missing, null):
        assert matches(one("first_name", "notEquals", "Ann"), person)
        assert matches(one("first_name", "notContains", "a"), person)
        assert matches(one("data.plan", "notEquals", "pro"), person)
        assert matches(one("data.plan", "notContains", "p"), person)
        assert matches(one("data.plan", "notExists"), person)
        assert not matches(one("data.plan", "exists"), person)


def test_attribute_comparisons_keep_json_types_apart() -> None:
    person = contact(attributes={"n": 5, "s": "5", "b": True, "one": 1})
    assert matches(one("data.n", "equals", 5.0), person)
    assert not matches(one("data.s", "equals", 5), person)
    assert not matches(one("data.s", "greaterThan", 4), person)
    assert not matches(one("data.one", "equals", True), person)
    assert matches(one("data.b", "equals", True), person)


def test_within_and_older_than_split_time_at_now_minus_n() -> None:
    edge = contact(created_at=NOW - timedelta(days=2))
    assert matches(one("createdAt", "within", 2, "days"), edge)
    assert not matches(one("createdAt", "olderThan", 2, "days"), edge)
    assert matches(one("createdAt", "olderThan", 47, "hours"), edge)
    dated = contact(attributes={"renewal": "2026-03-09"})  # in the future: still "within"
    assert matches(one("data.renewal", "within", 1, "minutes"), dated)


def test_lists_mean_subscribed_lists() -> None:
    assert matches(one("list", "equals", LIST_ID), contact(), {LIST_ID})
    assert matches(one("list", "notEquals", LIST_ID), contact(), {str(uuid.uuid4())})
    assert matches(one("subscribed", "equals", False), contact(status="bounced"))


def test_logic_combines_groups_and_nested_conditions_narrow_a_group() -> None:
    person = contact(first_name="Ann", attributes={"plan": "pro"})
    either = {
        "logic": "OR",
        "groups": [
            {"filters": [rule("first_name", "equals", "Bob")]},
            {
                "filters": [rule("data.plan", "equals", "pro")],
                "conditions": {"groups": [{"filters": [rule("email", "endsWith", "x")]}]},
            },
        ],
    }
    with pytest.raises(InvalidFilter):
        matches(either, person)
    either["groups"][1]["conditions"] = {"groups": [{"filters": [rule("email", "contains", "EX")]}]}  # type: ignore[index]
    assert matches(either, person)
    both = dict(either, logic="AND")
    assert not matches(both, person)
