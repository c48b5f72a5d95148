"""Declared template variables, their fallbacks, and the render context of a message.

A version declares the variables it uses (``[{"name", "type", "fallback"}]``). A name is
either a message variable (``plan``, also readable as ``data.plan``) or a contact field
(``contact.first_name``, or a custom one such as ``contact.nick``). The fallback is what a
message gets when neither the contact nor the message's data gives a value, so
``Hi {{ contact.first_name }}`` can read "Hi there" for a contact without a first name.
Sending uses :func:`message_context` exactly as the preview does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from postroom.errors import FieldProblem, ValidationFailed
from postroom.models.contacts import Contact
from postroom.templates.rendering import build_context

_NAME = re.compile(r"(?:(contact|data)\.)?([A-Za-z_][A-Za-z0-9_]*)\Z")
_CONTACT_COLUMNS = (
    "id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "locale",
    "timezone",
    "status",
    "created_at",
)


@dataclass(frozen=True, slots=True)
class SystemUrls:
    unsubscribe_url: str
    manage_url: str
    view_in_browser_url: str


# What previews put where the real per-message links will be.
PREVIEW_URLS = SystemUrls(
    unsubscribe_url="https://example.com/unsubscribe",
    manage_url="https://example.com/preferences",
    view_in_browser_url="https://example.com/view-in-browser",
)


def _fallback_fits(kind: str, value: object) -> bool:
    if value is None:
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    try:  # date: an ISO date
        date.fromisoformat(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def validate_variables(variables: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check names, uniqueness and that each fallback has the declared type (422)."""
    problems: list[FieldProblem] = []
    seen: set[str] = set()
    cleaned: list[dict[str, Any]] = []
    for index, spec in enumerate(variables):
        name = str(spec.get("name", "")).strip()
        kind = str(spec.get("type", "string"))
        fallback = spec.get("fallback")
        if not _NAME.match(name):
            message = "a name like plan, data.plan or contact.first_name"
            problems.append(FieldProblem(f"variables.{index}.name", message))
        elif name in seen:
            problems.append(FieldProblem(f"variables.{index}.name", f"'{name}' is declared twice"))
        elif not _fallback_fits(kind, fallback):
            message = f"the fallback must be a {kind}" + (" (YYYY-MM-DD)" if kind == "date" else "")
            problems.append(FieldProblem(f"variables.{index}.fallback", message))
        seen.add(name)
        cleaned.append({"name": name, "type": kind, "fallback": fallback})
    if problems:
        raise ValidationFailed(problems, f"{problems[0].field}: {problems[0].message}")
    return cleaned


def declared_names(variables: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names as the syntax check understands them: ``data.x`` declares ``x``."""
    names = []
    for spec in variables:
        match = _NAME.match(str(spec.get("name", "")))
        if match:
            scope, name = match.groups()
            names.append(f"contact.{name}" if scope == "contact" else name)
    return names


def contact_fields(contact: Contact) -> dict[str, Any]:
    fields: dict[str, Any] = {column: getattr(contact, column) for column in _CONTACT_COLUMNS}
    fields["id"] = str(contact.id)
    fields["created_at"] = contact.created_at.isoformat()
    fields["attributes"] = dict(contact.attributes or {})
    return fields


def _blank(value: object) -> bool:
    return value is None or value == ""


def apply_fallbacks(
    contact: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None,
    variables: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The contact fields and message data with each declared fallback filled in where
    the message would otherwise have no value."""
    fields = dict(contact or {})
    attributes = dict(fields.get("attributes") or {})
    values = dict(data or {})
    if contact is not None and "full_name" not in fields:
        names = (fields.get("first_name"), fields.get("last_name"))
        fields["full_name"] = " ".join(str(n) for n in names if n) or None
    for spec in variables:
        match = _NAME.match(str(spec.get("name", "")))
        fallback = spec.get("fallback")
        if match is None or fallback is None:
            continue
        scope, name = match.groups()
        if scope == "contact":
            if name in _CONTACT_COLUMNS or name == "full_name":
                if _blank(fields.get(name)):
                    fields[name] = fallback
            elif _blank(attributes.get(name)):
                attributes[name] = fallback
        elif _blank(values.get(name)) and _blank(attributes.get(name)):
            values[name] = fallback
    if contact is not None or attributes:
        fields["attributes"] = attributes
    return fields, values


def message_context(
    contact: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None,
    variables: Sequence[Mapping[str, Any]],
    urls: SystemUrls,
) -> dict[str, object]:
    """The render context of one message (``build_context`` after the fallbacks)."""
    fields, values = apply_fallbacks(contact, data, variables)
    return build_context(
        contact=fields,
        variables=values,
        unsubscribe_url=urls.unsubscribe_url,
        manage_url=urls.manage_url,
        view_in_browser_url=urls.view_in_browser_url,
    )
