"""The segment compiler against the Python evaluator, and audiences, on SQLite and PostgreSQL.

Each database is created once for this module (a temp-file SQLite, a throwaway PostgreSQL
database) with ``Base.metadata.create_all``; the hypothesis examples reuse it, emptying the
contact tables between examples.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import String, delete, insert, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import postroom.models.contacts
import postroom.models.workspaces
from postroom.contacts.audience import Audience, audience_contact_ids, audience_count
from postroom.contacts.segments import (
    FilterCondition,
    compile_filter,
    evaluate_filter,
    parse_filter,
)
from postroom.contacts.segments.iso_dates import parse_instant, sql_instant_text
from postroom.db.engine import create_engine
from postroom.errors import NotFound
from postroom.models.base import Base
from postroom.models.contacts import (
    SUBSCRIPTION_STATUSES,
    Contact,
    ContactList,
    Subscription,
    Suppression,
    email_hash,
)
from postroom.models.platform import Event
from postroom.models.workspaces import Workspace
from tests.support.databases import fresh_pg_database

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
assert postroom.models.contacts and postroom.models.workspaces  # tables on Base.metadata


@dataclass
class SegmentDb:
    engine: AsyncEngine
    dialect: str
    workspace_id: uuid.UUID
    other_workspace_id: uuid.UUID
    list_ids: tuple[uuid.UUID, ...]


async def _prepare(engine: AsyncEngine) -> SegmentDb:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    workspace_id, other_workspace_id = uuid.uuid4(), uuid.uuid4()
    list_ids = (uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    async with engine.begin() as conn:
        for ws, name in ((workspace_id, "acme"), (other_workspace_id, "other")):
            await conn.execute(
                insert(Workspace).values(id=ws, name=name, created_at=NOW, updated_at=NOW)
            )
        for index, list_id in enumerate(list_ids):
            await conn.execute(
                insert(ContactList).values(
                    id=list_id,
                    workspace_id=workspace_id,
                    name=f"list {index}",
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
    return SegmentDb(engine, engine.dialect.name, workspace_id, other_workspace_id, list_ids)


@pytest_asyncio.fixture(scope="module", params=["sqlite", "postgresql"])
async def segment_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SegmentDb]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("segments") / "segments.db"
        engine = create_engine(f"sqlite+aiosqlite:///{path.as_posix()}", pool_size=2)
        yield await _prepare(engine)
        await engine.dispose()
        return
    with fresh_pg_database(prefix="seg_test") as url:
        engine = create_engine(
            url.replace("postgresql://", "postgresql+psycopg://", 1), pool_size=2
        )
        yield await _prepare(engine)
        await engine.dispose()


async def _reset(db: SegmentDb, conn: AsyncConnection | None = None) -> None:
    if conn is None:
        async with db.engine.begin() as own:
            await _reset(db, own)
        return
    for table in (Subscription, Suppression, Event, Contact):
        await conn.execute(delete(table))


def _contact_row(db: SegmentDb, email: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "workspace_id": db.workspace_id,
        "email": email,
        "email_key": email.lower(),
        "status": "subscribed",
        "attributes": {},
        "created_at": NOW,
        "updated_at": NOW,
    }
    row.update(fields)
    return row


async def _insert(
    db: SegmentDb,
    contacts: list[dict[str, Any]],
    subscriptions: Sequence[tuple[uuid.UUID, uuid.UUID, str]] = (),
    conn: AsyncConnection | None = None,
) -> None:
    if conn is None:
        async with db.engine.begin() as own:
            await _insert(db, contacts, subscriptions, own)
        return
    if contacts:
        await conn.execute(insert(Contact), contacts)
    if subscriptions:
        await conn.execute(
            insert(Subscription),
            [
                {
                    "list_id": list_id,
                    "contact_id": contact_id,
                    "workspace_id": db.workspace_id,
                    "status": status,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for list_id, contact_id, status in subscriptions
            ],
        )


async def _matching_emails(db: SegmentDb, data: Mapping[str, Any]) -> set[str]:
    condition = compile_filter(parse_filter(data), now=NOW, dialect_name=db.dialect)
    async with db.engine.connect() as conn:
        result = await conn.execute(
            select(Contact.email).where(Contact.workspace_id == db.workspace_id, condition)
        )
        return set(result.scalars())


def _one(field: str, operator: str, value: Any = None, unit: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"field": field, "operator": operator, "value": value}
    if unit is not None:
        rule["unit"] = unit
    return {"logic": "AND", "groups": [{"filters": [rule]}]}


# --- hypothesis: SQL == the Python evaluator ------------------------------------------------

# Small pools, so that filters and contacts meet often enough to tell right from wrong.
NAMES = ["Ann", "ANN", "anna", "Émile", "ÉMILE", "50%", "a_b", "axb", "a\\b", ""]
NAME_NEEDLES = ["an", "AN", "É", "émile", "%", "_", "0%", "a_", "\\"]
EMAIL_LOCALS = ["ann", "Ann.B", "a_b", "axb", "a%b", "émile", "Zoë", "bob", "Bo", "x"]
EMAIL_DOMAINS = ["x.io", "Y.org"]
EMAIL_NEEDLES = ["ann", "ANN", "a_", "a%", "@y", "ÉMILE", "x.io", "zoë", "b"]
KEYS = ["plan", "score", "tags", "nested"]
ATTRIBUTE_DATES = [
    "2026-03-01",
    "2026-03-02T08:59:00Z",
    "2026-03-02 08:00:00",
    "2026-03-02T10:00:00.5+02:00",
    "2026-03-01T23:59:59.999999Z",
    "2024-02-29",
    "2026-02-29",  # no such day
    "2026-03-02T09:00",  # no seconds: not in the grammar
    "2026-13-01",
]
# 1 and 0 meet true and false (SQLite reads a JSON true as 1), "[1]" meets the array [1].
ATTRIBUTE_SCALARS = [True, False, 0, 1, 5, 7, 0.5, 5.0, -1.25, "5", "[1]", "vip", "VIP", "Ann"]
ATTRIBUTE_SCALARS += ["a_b"]
ATTRIBUTE_SCALARS += ["50%", "Émile", *ATTRIBUTE_DATES]
ATTRIBUTE_NEEDLES = ["vip", "VIP", "an", "_", "%", "É", "5", "2026-03"]
ATTRIBUTE_PREFIXES = ["vi", "VI", "a_", "2026-03-0", "É", "5"]
NUMBERS = [-1, 0, 0.5, 1, 5, 6, 7.0]
DATES = [
    NOW,
    NOW - timedelta(minutes=30),
    NOW - timedelta(hours=1, microseconds=1),
    NOW - timedelta(days=1),
    NOW - timedelta(days=30),
    datetime(2026, 3, 1, tzinfo=UTC),
    datetime(2026, 3, 1, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2024, 2, 29, 12, tzinfo=UTC),
]
DATE_VALUES = [
    "2026-03-01",
    "2026-03-02",
    "2024-02-29",
    "2026-03-02T09:00:00Z",
    "2026-03-02T08:30:00+00:00",
    "2026-03-01T23:59:59.999999Z",
    "2026-03-02T10:00:00+01:00",
]
AMOUNTS = [1, 2, 30, 59.5, 60, 1440]
EVENT_TYPES = ["email.opened", "email.clicked", "email.sent", "signup"]
EVENT_FIELDS = ["email.opened", "email.clicked", "event.email.sent", "event.signup", "event.none"]
EVENT_OPS = [
    "triggered",
    "notTriggered",
    "triggeredWithin",
    "notTriggeredWithin",
    "triggeredOlderThan",
]
STABLE_LIST_IDS = (*(str(uuid.UUID(int=n)) for n in range(1, 4)), str(uuid.UUID(int=99)))

attribute_scalars = st.sampled_from([None, *ATTRIBUTE_SCALARS])
attribute_values = st.one_of(
    attribute_scalars,
    attribute_scalars,
    st.lists(attribute_scalars, max_size=3),
    st.fixed_dictionaries({"a": attribute_scalars}),
)
maybe_name = st.sampled_from([None, *NAMES])


def _with_email(fields: dict[str, Any]) -> dict[str, Any]:
    return {"email": f"{fields.pop('local')}@{fields.pop('domain')}", **fields}


# fixed_dictionaries rather than a composite: several times faster to draw.
contacts = st.fixed_dictionaries(
    {
        "local": st.sampled_from(EMAIL_LOCALS),
        "domain": st.sampled_from(EMAIL_DOMAINS),
        "first_name": maybe_name,
        "last_name": maybe_name,
        "locale": st.sampled_from([None, "en", "en-US", "EN", "fr-FR"]),
        "timezone": st.sampled_from([None, "UTC", "Europe/Paris"]),
        "status": st.sampled_from(["subscribed", "unsubscribed", "bounced", "complained"]),
        "created_at": st.sampled_from(DATES),
        "updated_at": st.sampled_from(DATES),
        "attributes": st.fixed_dictionaries({}, optional=dict.fromkeys(KEYS, attribute_values)),
        "memberships": st.fixed_dictionaries(
            {}, optional=dict.fromkeys(range(3), st.sampled_from(SUBSCRIPTION_STATUSES))
        ),
        "events": st.lists(
            st.tuples(st.sampled_from(EVENT_TYPES), st.sampled_from(DATES)), max_size=3
        ),
    }
).map(_with_email)


def _sorted_dates(values: list[str]) -> list[str]:
    return sorted(values, key=lambda value: _instant_of(value))


def _instant_of(value: str) -> int:
    parsed = parse_instant(value)
    assert parsed is not None
    return parsed[0].micros


def _pick(draw: st.DrawFn, operator: str, pool: list[Any]) -> Any:
    if operator == "in":
        return draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
    if operator == "between":
        pair = draw(st.lists(st.sampled_from(pool), min_size=2, max_size=2))
        return _sorted_dates(pair) if isinstance(pair[0], str) else sorted(pair)
    return draw(st.sampled_from(pool))


TEXT_OPS = ["equals", "notEquals", "contains", "notContains", "startsWith", "in"]
ORDER_OPS = ["greaterThan", "lessThan", "greaterThanOrEqual", "lessThanOrEqual", "between"]
ALL_OPS = [*TEXT_OPS, *ORDER_OPS, "exists", "notExists", "within", "olderThan"]


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    # Attributes have the most cases, so they come up most.
    kind = draw(
        st.sampled_from(
            ["email", "status", "text", "date", "list", "event", "event", *["attr"] * 5]
        )
    )
    rule: dict[str, Any] = {}
    if kind == "event":
        operator = draw(st.sampled_from(EVENT_OPS))
        rule = {"field": draw(st.sampled_from(EVENT_FIELDS)), "operator": operator}
        if operator not in ("triggered", "notTriggered"):
            rule["value"] = draw(st.sampled_from(AMOUNTS))
            rule["unit"] = draw(st.sampled_from(["minutes", "hours", "days"]))
    elif kind == "email":
        operator = draw(st.sampled_from(TEXT_OPS))
        exact = operator in ("equals", "notEquals", "in")
        full = [f"{local}@x.io" for local in [*EMAIL_LOCALS, "ANN", "ÉMILE"]]
        value = _pick(draw, operator, full if exact else EMAIL_NEEDLES)
        rule = {"field": "email", "operator": operator, "value": value}
    elif kind == "status":
        field = draw(st.sampled_from(["status", "subscribed"]))
        operator = draw(
            st.sampled_from(["equals", "notEquals", "in"][: 3 if field == "status" else 2])
        )
        pool: list[Any] = ["subscribed", "bounced", "complained"]
        if field == "subscribed":
            pool = [True, False]
        rule = {"field": field, "operator": operator, "value": _pick(draw, operator, pool)}
    elif kind == "text":
        field = draw(st.sampled_from(["first_name", "firstName", "lastName", "locale", "timezone"]))
        operator = draw(st.sampled_from([*TEXT_OPS, "exists", "notExists"]))
        exact = operator in ("equals", "notEquals", "in")
        pool = [*NAMES, "en", "EN", "UTC"] if exact else [*NAME_NEEDLES, "e", "U"]
        value = None if operator.endswith("xists") else _pick(draw, operator, pool)
        rule = {"field": field, "operator": operator, "value": value}
    elif kind == "date":
        field = draw(st.sampled_from(["createdAt", "created_at", "updatedAt", "updated_at"]))
        operator = draw(st.sampled_from(["equals", "notEquals", *ORDER_OPS, "within", "olderThan"]))
        rule = {"field": field, "operator": operator}
        if operator in ("within", "olderThan"):
            rule["value"] = draw(st.sampled_from(AMOUNTS))
            rule["unit"] = draw(st.sampled_from(["minutes", "hours", "days"]))
        else:
            rule["value"] = _pick(draw, operator, DATE_VALUES)
    elif kind == "list":
        operator = draw(st.sampled_from(["equals", "notEquals", "in"]))
        rule = {"field": "list", "operator": operator}
        rule["value"] = _pick(draw, operator, list(STABLE_LIST_IDS))
    else:
        key = draw(st.sampled_from([*KEYS, "nested.a", "tags.a", "missing"]))
        field = f"{draw(st.sampled_from(['data', 'attributes']))}.{key}"
        operator = draw(st.sampled_from(ALL_OPS))
        rule = {"field": field, "operator": operator}
        if operator in ("within", "olderThan"):
            rule["value"] = draw(st.sampled_from(AMOUNTS))
            rule["unit"] = draw(st.sampled_from(["minutes", "hours", "days"]))
        elif operator in ORDER_OPS:
            rule["value"] = _pick(draw, operator, draw(st.sampled_from([NUMBERS, DATE_VALUES])))
        elif operator in ("contains", "notContains"):
            rule["value"] = draw(st.sampled_from([*ATTRIBUTE_NEEDLES, 5, 0.5, True, False]))
        elif operator == "startsWith":
            rule["value"] = draw(st.sampled_from(ATTRIBUTE_PREFIXES))
        elif not operator.endswith("xists"):
            rule["value"] = _pick(draw, operator, ATTRIBUTE_SCALARS)
    return rule


@st.composite
def conditions(draw: st.DrawFn, depth: int = 1) -> dict[str, Any]:
    groups = []
    for _ in range(draw(st.integers(1, 3))):
        group: dict[str, Any] = {}
        # Nest now and then, up to three levels.
        if depth < 3 and draw(st.integers(0, 3)) == 0:
            group["conditions"] = draw(conditions(depth + 1))
        minimum = 0 if "conditions" in group else 1
        group["filters"] = draw(st.lists(rules(), min_size=minimum, max_size=3))
        groups.append(group)
    return {"logic": draw(st.sampled_from(["AND", "OR"])), "groups": groups}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    people=st.lists(contacts, min_size=4, max_size=10, unique_by=lambda c: c["email"].lower()),
    data=conditions(),
    single_rules=st.lists(rules(), min_size=4, max_size=8),
)
async def test_sql_matches_the_python_evaluator(
    segment_db: SegmentDb,
    people: list[dict[str, Any]],
    data: dict[str, Any],
    single_rules: list[dict[str, Any]],
) -> None:
    db = segment_db
    # The strategy names lists by stable stand-ins; map them onto this database's lists.
    real = {STABLE_LIST_IDS[i]: str(db.list_ids[i]) for i in range(3)}
    data = _replace_list_ids(data, real)
    single_rules = _replace_list_ids(single_rules, real)
    rows: list[dict[str, Any]] = []
    subscriptions: list[tuple[uuid.UUID, uuid.UUID, str]] = []
    subscribed_to: dict[uuid.UUID, set[str]] = {}
    events: list[dict[str, Any]] = []
    events_of: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for person in people:
        fields = {k: v for k, v in person.items() if k not in ("memberships", "events")}
        row = _contact_row(db, **fields)
        rows.append(row)
        subscribed_to[row["id"]] = set()
        events_of[row["id"]] = []
        for type_, moment in person["events"]:
            events_of[row["id"]].append({"type": type_, "occurred_at": moment})
            events.append(
                {
                    "id": uuid.uuid4(),
                    "workspace_id": db.workspace_id,
                    "type": type_,
                    "contact_id": row["id"],
                    "data": {},
                    "occurred_at": moment,
                }
            )
        for index, status in person["memberships"].items():
            subscriptions.append((db.list_ids[index], row["id"], status))
            if status == "subscribed":
                subscribed_to[row["id"]].add(str(db.list_ids[index]))
    # The whole filter, then rules alone (its own and more): a bug in one rule could hide
    # inside an AND or an OR, and one set of contacts can answer many queries.
    queries = [parse_filter(data)] + [
        parse_filter({"groups": [{"filters": [rule]}]}) for rule in _rules_of(data) + single_rules
    ]
    # One transaction per example: the pool pings PostgreSQL at every checkout.
    async with db.engine.begin() as conn:
        await _reset(db, conn)
        await _insert(db, rows, subscriptions, conn)
        if events:
            await conn.execute(insert(Event), events)
        result = await conn.execute(select(Contact.__table__))
        stored = [dict(row) for row in result.mappings()]
        for condition in queries:
            compiled = compile_filter(condition, now=NOW, dialect_name=db.dialect)
            query = select(Contact.id).where(Contact.workspace_id == db.workspace_id, compiled)
            matched = set((await conn.execute(query)).scalars())
            expected = {
                row["id"]
                for row in stored
                if evaluate_filter(
                    condition,
                    row,
                    now=NOW,
                    list_ids=subscribed_to[row["id"]],
                    events=events_of[row["id"]],
                )
            }
            assert matched == expected, condition.model_dump()


def _rules_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for group in data["groups"]:
        found += group["filters"]
        if "conditions" in group:
            found += _rules_of(group["conditions"])
    return found


def _replace_list_ids(data: Any, mapping: dict[str, str]) -> Any:
    if isinstance(data, dict):
        return {k: _replace_list_ids(v, mapping) for k, v in data.items()}
    if isinstance(data, list):
        return [_replace_list_ids(v, mapping) for v in data]
    return mapping.get(data, data) if isinstance(data, str) else data


# --- hypothesis: the SQL UTC texts == the Python parser ---------------------------------------

SPECIAL_DAYS = [date(2000, 2, 29), date(2024, 2, 29), date(1, 1, 1), date(9999, 12, 31)]
BREAKS = {
    "month": ["00", "13"],
    "day": ["00", "32", "31"],
    "feb29": ["1600", "1700", "1900", "2000", "2023", "2100", "2400"],
    "hour": ["24", "99"],
    "minute": ["60"],
    "second": ["60"],
    "fraction": [".", ".1234567", ".12a"],
    "zone": ["+24:00", "-00:60", "+0530", "z", "+05", "Z+01:00"],
    "separator": ["t", "/", "  "],
    "edges": [" {}", "{} ", "{}\n", "x{}"],
}


@st.composite
def date_like(draw: st.DrawFn) -> str:
    """ISO dates in every accepted shape, a quarter of them broken in one place."""
    day = draw(st.one_of(st.dates(), st.sampled_from(SPECIAL_DAYS)))
    parts = {"year": f"{day.year:04d}", "month": f"{day.month:02d}", "day": f"{day.day:02d}"}
    moment = draw(st.one_of(st.none(), st.times()))
    if moment is not None:
        digits = draw(st.integers(0, 6))
        sign, hours, minutes = (
            draw(st.sampled_from("+-")),
            draw(st.integers(0, 23)),
            draw(st.integers(0, 59)),
        )
        parts |= {
            "separator": draw(st.sampled_from(["T", " "])),
            "hour": f"{moment.hour:02d}",
            "minute": f"{moment.minute:02d}",
            "second": f"{moment.second:02d}",
            "fraction": f".{moment.microsecond:06d}"[: digits + 1] if digits else "",
            "zone": draw(st.sampled_from(["", "Z", f"{sign}{hours:02d}:{minutes:02d}"])),
        }
    edges = "{}"
    if draw(st.integers(0, 3)) == 0:
        broken = draw(
            st.sampled_from(sorted(k for k in BREAKS if k in parts or k in ("feb29", "edges")))
        )
        replacement = draw(st.sampled_from(BREAKS[broken]))
        if broken == "feb29":
            parts |= {"year": replacement, "month": "02", "day": "29"}
        elif broken == "edges":
            edges = replacement
        else:
            parts[broken] = replacement
    text = f"{parts['year']}-{parts['month']}-{parts['day']}"
    if "hour" in parts:
        text += f"{parts['separator']}{parts['hour']}:{parts['minute']}:{parts['second']}"
        text += parts["fraction"] + parts["zone"]
    return edges.format(text)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(date_like(), min_size=1, max_size=25, unique=True))
async def test_sql_date_texts_match_the_python_parser(
    segment_db: SegmentDb, texts: list[str]
) -> None:
    table = union_all(*(select(literal(text, String).label("text")) for text in texts)).subquery()
    query = select(table.c.text, sql_instant_text(table.c.text, segment_db.dialect))
    async with segment_db.engine.connect() as conn:
        found = {row[0]: row[1] for row in (await conn.execute(query)).all()}
    expected = {text: (p[0].utc_text() if (p := parse_instant(text)) else None) for text in texts}
    assert found == expected


# --- focused behaviour --------------------------------------------------------------------


async def test_like_wildcards_in_values_are_literal(segment_db: SegmentDb) -> None:
    db = segment_db
    await _reset(db)
    names = {
        "50%": "p@x.io",
        "500": "q@x.io",
        "a_b": "a_b@x.io",
        "axb": "axb@x.io",
        "a\\b": "s@x.io",
    }
    await _insert(
        db,
        [
            _contact_row(db, email, first_name=name, attributes={"code": name})
            for name, email in names.items()
        ],
    )
    assert await _matching_emails(db, _one("first_name", "contains", "0%")) == {"p@x.io"}
    assert await _matching_emails(db, _one("first_name", "startsWith", "a_")) == {"a_b@x.io"}
    assert await _matching_emails(db, _one("first_name", "contains", "\\")) == {"s@x.io"}
    assert await _matching_emails(db, _one("data.code", "contains", "%")) == {"p@x.io"}
    assert await _matching_emails(db, _one("data.code", "startsWith", "a_")) == {"a_b@x.io"}
    assert await _matching_emails(db, _one("email", "contains", "_")) == {"a_b@x.io"}
    assert await _matching_emails(db, _one("email", "startsWith", "a_")) == {"a_b@x.io"}


async def test_text_matching_folds_ascii_case_only(segment_db: SegmentDb) -> None:
    db = segment_db
    await _reset(db)
    people = {"ANNA": "1@x.io", "anna": "2@x.io", "Émile": "3@x.io", "ÉMILE": "4@x.io"}
    await _insert(db, [_contact_row(db, email, first_name=n) for n, email in people.items()])
    assert await _matching_emails(db, _one("firstName", "contains", "Ann")) == {"1@x.io", "2@x.io"}
    # É is not an ASCII letter: it matches only itself, identically on both databases.
    assert await _matching_emails(db, _one("firstName", "startsWith", "émi")) == set()
    assert await _matching_emails(db, _one("firstName", "contains", "ÉMI")) == {"3@x.io", "4@x.io"}
    # equals stays exact.
    assert await _matching_emails(db, _one("first_name", "equals", "anna")) == {"2@x.io"}


async def test_email_matching_is_case_insensitive(segment_db: SegmentDb) -> None:
    db = segment_db
    await _reset(db)
    await _insert(db, [_contact_row(db, "Émile.Zola@Example.org"), _contact_row(db, "bob@x.io")])
    for rule in (
        _one("email", "equals", "ÉMILE.ZOLA@EXAMPLE.ORG"),
        _one("email", "contains", "ZOLA@"),
        _one("email", "startsWith", "ÉMILE"),
        _one("email", "in", ["nobody@x.io", "émile.zola@example.org"]),
    ):
        assert await _matching_emails(db, rule) == {"Émile.Zola@Example.org"}
    assert await _matching_emails(db, _one("email", "notEquals", "BOB@X.IO")) == {
        "Émile.Zola@Example.org"
    }


async def test_attribute_types_stay_strict(segment_db: SegmentDb) -> None:
    db = segment_db
    await _reset(db)
    values = {
        "int@x.io": 5,
        "float@x.io": 5.0,
        "text@x.io": "5",
        "bool@x.io": True,
        "list@x.io": [5, "VIP"],
        "object@x.io": {"n": 5},
        "null@x.io": None,
        "date@x.io": "2026-03-01T12:00:00+02:00",
        "baddate@x.io": "2026-02-30",
    }
    rows = [_contact_row(db, email, attributes={"n": v}) for email, v in values.items()]
    rows.append(_contact_row(db, "missing@x.io"))
    await _insert(db, rows)
    assert await _matching_emails(db, _one("data.n", "equals", 5)) == {"int@x.io", "float@x.io"}
    assert await _matching_emails(db, _one("data.n", "equals", "5")) == {"text@x.io"}
    assert await _matching_emails(db, _one("data.n", "equals", True)) == {"bool@x.io"}
    # SQLite reads a JSON true as 1 and an array as its JSON text: neither may leak through.
    assert await _matching_emails(db, _one("data.n", "equals", 1)) == set()
    assert await _matching_emails(db, _one("data.n", "equals", '[5,"VIP"]')) == set()
    assert await _matching_emails(db, _one("data.n", "greaterThan", 4)) == {
        "int@x.io",
        "float@x.io",
    }
    assert await _matching_emails(db, _one("data.n", "contains", 5)) == {"list@x.io"}
    assert await _matching_emails(db, _one("data.n", "contains", "vip")) == {"list@x.io"}
    assert await _matching_emails(db, _one("attributes.n.n", "lessThanOrEqual", 5)) == {
        "object@x.io"
    }
    # 12:00+02:00 is 10:00 UTC; 2026-02-30 is no date and matches no date comparison.
    assert await _matching_emails(db, _one("data.n", "lessThan", "2026-03-01T10:00:01Z")) == {
        "date@x.io"
    }
    assert await _matching_emails(db, _one("data.n", "within", 1, "days")) == {"date@x.io"}
    assert await _matching_emails(db, _one("data.n", "notExists")) == {"null@x.io", "missing@x.io"}
    not_five = await _matching_emails(db, _one("data.n", "notEquals", 5))
    assert not_five == set(values) - {"int@x.io", "float@x.io"} | {"missing@x.io"}


async def test_list_condition_counts_subscribed_members_only(segment_db: SegmentDb) -> None:
    db = segment_db
    await _reset(db)
    first, second, _third = db.list_ids
    people = [_contact_row(db, f"{s}@x.io") for s in ("sub", "unconfirmed", "unsub", "none")]
    await _insert(
        db,
        people,
        [
            (first, people[0]["id"], "subscribed"),
            (first, people[1]["id"], "unconfirmed"),
            (first, people[2]["id"], "unsubscribed"),
            (second, people[2]["id"], "subscribed"),
        ],
    )
    assert await _matching_emails(db, _one("list", "equals", str(first))) == {"sub@x.io"}
    assert await _matching_emails(db, _one("list", "notEquals", str(first))) == {
        "unconfirmed@x.io",
        "unsub@x.io",
        "none@x.io",
    }
    assert await _matching_emails(db, _one("list", "in", [str(first), str(second)])) == {
        "sub@x.io",
        "unsub@x.io",
    }


async def test_date_column_equals_a_day(segment_db: SegmentDb) -> None:
    db = segment_db
    await _reset(db)
    stamps = {
        "before@x.io": datetime(2026, 2, 28, 23, 59, 59, 999_999, tzinfo=UTC),
        "start@x.io": datetime(2026, 3, 1, tzinfo=UTC),
        "end@x.io": datetime(2026, 3, 1, 23, 59, 59, 999_999, tzinfo=UTC),
        "after@x.io": datetime(2026, 3, 2, tzinfo=UTC),
    }
    await _insert(db, [_contact_row(db, e, created_at=t) for e, t in stamps.items()])
    assert await _matching_emails(db, _one("createdAt", "equals", "2026-03-01")) == {
        "start@x.io",
        "end@x.io",
    }
    assert await _matching_emails(db, _one("created_at", "equals", "2026-03-01T00:00:00Z")) == {
        "start@x.io"
    }
    within = _one("createdAt", "within", 33, "hours")  # NOW is 2026-03-02T09:00Z
    assert await _matching_emails(db, within) == {"start@x.io", "end@x.io", "after@x.io"}


# --- audiences ----------------------------------------------------------------------------


async def _audience_emails(
    db: SegmentDb,
    audience: Audience,
    purpose: str = "marketing",
    segments: Mapping[uuid.UUID, FilterCondition] | None = None,
) -> set[str]:
    options: dict[str, Any] = {
        "workspace_id": db.workspace_id,
        "now": NOW,
        "dialect_name": db.dialect,
        "segment_filters": segments or {},
        "purpose": purpose,
    }
    query = audience_contact_ids(audience, **options)
    async with db.engine.connect() as conn:
        emails = {row.email for row in await conn.execute(query)}
        count = (await conn.execute(audience_count(audience, **options))).scalar_one()
    assert count == len(emails)
    return emails


async def _suppress(db: SegmentDb, email: str | None, key: str, reason: str, ws: uuid.UUID) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(Suppression).values(
                workspace_id=ws,
                email=email,
                email_hash=email_hash(key),
                reason=reason,
                created_at=NOW,
            )
        )


async def test_audience_excludes_everyone_who_may_not_be_mailed(segment_db: SegmentDb) -> None:
    db = segment_db
    await _reset(db)
    first, second, third = db.list_ids
    names = [
        "ok",
        "ok2",
        "unsubscribed",
        "bounced",
        "complained",
        "unconfirmed",
        "list-unsub",
        "supp-unsub",
        "supp-bounce",
        "supp-manual",
        "tombstone",
        "other-list",
        "excluded",
    ]
    people = {n: _contact_row(db, f"{n}@x.io") for n in names}
    for status in ("unsubscribed", "bounced", "complained"):
        people[status]["status"] = status
    people["other-ws"] = _contact_row(db, "other-ws@x.io", workspace_id=db.other_workspace_id)
    subs = [(first, people[n]["id"], "subscribed") for n in names if n not in ("other-list",)]
    subs = [
        s for s in subs if s[1] not in (people["unconfirmed"]["id"], people["list-unsub"]["id"])
    ]
    subs += [
        (first, people["unconfirmed"]["id"], "unconfirmed"),
        (first, people["list-unsub"]["id"], "unsubscribed"),
        (second, people["other-list"]["id"], "subscribed"),
        (third, people["excluded"]["id"], "subscribed"),
    ]
    await _insert(db, list(people.values()), subs)
    ws = db.workspace_id
    await _suppress(db, "supp-unsub@x.io", "supp-unsub@x.io", "unsubscribe", ws)
    await _suppress(db, "supp-bounce@x.io", "supp-bounce@x.io", "bounce", ws)
    await _suppress(db, "supp-manual@x.io", "supp-manual@x.io", "manual", ws)
    await _suppress(db, None, "tombstone@x.io", "complaint", ws)
    # Another workspace's suppression of "ok" does not touch this workspace.
    await _suppress(db, "ok@x.io", "ok@x.io", "bounce", db.other_workspace_id)

    marketing = await _audience_emails(db, Audience(lists=[first, second], exclude_lists=[third]))
    assert marketing == {"ok@x.io", "ok2@x.io", "other-list@x.io"}
    transactional = await _audience_emails(
        db, Audience(lists=[first, second], exclude_lists=[third]), "transactional"
    )
    assert transactional == marketing | {"supp-unsub@x.io"}
    everyone = await _audience_emails(db, Audience())
    assert everyone == {
        "ok@x.io",
        "ok2@x.io",
        "other-list@x.io",
        "excluded@x.io",
        "unconfirmed@x.io",
        "list-unsub@x.io",
    }


async def test_audience_segments_and_filters_narrow_it(segment_db: SegmentDb) -> None:
    db = segment_db
    await _reset(db)
    first = db.list_ids[0]
    people = [
        _contact_row(db, f"{plan}{n}@x.io", attributes={"plan": plan, "n": n})
        for plan in ("pro", "free")
        for n in range(3)
    ]
    await _insert(db, people, [(first, p["id"], "subscribed") for p in people])
    pro, big = uuid.uuid4(), uuid.uuid4()
    segments = {
        pro: parse_filter(_one("data.plan", "equals", "pro")),
        big: parse_filter(_one("data.n", "greaterThanOrEqual", 2)),
    }
    audience = Audience(
        lists=[first],
        segment_id=pro,
        exclude_segment_id=big,
        filter=parse_filter(_one("data.n", "notEquals", 0)),
    )
    assert await _audience_emails(db, audience, segments=segments) == {"pro1@x.io"}
    with pytest.raises(NotFound):
        await _audience_emails(db, Audience(segment_id=uuid.uuid4()), segments=segments)


async def test_core_insert_fills_the_email_hash(segment_db: SegmentDb) -> None:
    db = segment_db
    await _reset(db)
    await _insert(db, [_contact_row(db, "Mixed.Case@X.io")])
    async with db.engine.connect() as conn:
        stored = (await conn.execute(select(Contact.email_hash))).scalar_one()
    assert stored == email_hash("mixed.case@x.io") == email_hash("Mixed.Case@X.io")
    assert len(stored) == 64 and set(stored) <= set(string.hexdigits.lower())
