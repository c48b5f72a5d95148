"""Validation and normalisation of contact fields, shared by the importer and the API.

Every function raises :class:`FieldError` (field, message, stable code) on bad input and
returns the form that is stored:

- ``email``: email-validator, syntax only (no DNS, no deliverability), stored in its
  ``normalized`` form (domain lower-cased and IDNA-decoded, local part NFC-normalised, RFC 2142
  role names such as ``Postmaster`` lower-cased). Uniqueness uses ``email_key``: that form
  lower-cased. email-validator costs ~50 µs an address and an import must validate 100,000
  rows/s, so plain ASCII addresses go through a strict regex first whose accepted set is a
  subset of email-validator's and whose result is identical (a hypothesis test compares
  both); anything else falls back to email-validator.
- ``phone``: E.164 through ``phonenumbers``; a number without ``+`` needs a default region.
- ``locale``: ``language[-Script][-REGION]`` with ``-`` or ``_`` (``pt_BR`` → ``pt-BR``,
  ``zh_hant_tw`` → ``zh-Hant-TW``). Syntax only: no registry lookup.
- ``timezone``: an IANA name from ``zoneinfo.available_timezones()``, matched
  case-insensitively, returned in its canonical spelling (``europe/paris`` → ``Europe/Paris``).
- ``status``: ``subscribed | unsubscribed | bounced | complained`` (any case).
- ``subscribed``, ``opt_in``: a bool, or ``true false yes no 1 0`` (any case).
- text fields (``external_id``, names, consent): trimmed, at most 255 characters; an integer
  ``external_id`` (JSON) becomes its decimal string.
- ``attributes``: a JSON object: non-blank string keys of at most 255 characters, JSON values,
  finite numbers.

Empty strings and ``None`` mean "not provided" (``None`` on :class:`ContactInput`), so an upsert
overwrites only what was given. No string may hold NUL or a lone surrogate: PostgreSQL stores
neither, so they are refused here rather than inside an insert.

Typed attribute columns (CSV import): a header ``name:type`` with type ``string``, ``number``,
``boolean``, ``date`` or ``datetime`` (see :func:`convert_attribute`) makes an attribute
``name`` of that type. A header whose suffix is not one of these stays whole (``utm:source``
is the string attribute ``utm:source``). A hint always means "attribute", even when the name is
a field's (``email:string`` is the attribute ``email``): the exporter relies on it to write
attribute columns that would otherwise be read as fields.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from typing import Final, Literal, get_args
from zoneinfo import available_timezones

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

MAX_TEXT_LENGTH: Final = 255
MAX_EMAIL_LENGTH: Final = 254  # RFC 5321 path limit; email-validator enforces it too
CONTACT_STATUSES: Final = ("subscribed", "unsubscribed", "bounced", "complained")
FIELD_NAMES: Final = (
    "email",
    "external_id",
    "first_name",
    "last_name",
    "phone",
    "locale",
    "timezone",
    "status",
    "subscribed",
    "opt_in",
    "consent_source",
    "consent_version",
)
# Columns our own export writes that an import must not turn into attributes.
READ_ONLY_COLUMNS: Final = frozenset({"created_at", "updated_at"})

AttributeType = Literal["string", "number", "boolean", "date", "datetime"]
ATTRIBUTE_TYPES: Final[dict[str, AttributeType]] = {kind: kind for kind in get_args(AttributeType)}


class FieldError(Exception):
    """One invalid field: ``field`` is its name (``attributes.plan`` for an attribute)."""

    def __init__(self, field: str, message: str, code: str = "invalid") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code


@dataclass(slots=True)
class ContactInput:
    """A validated contact as given: ``None`` means "not provided" (keep the stored value)."""

    email: str
    email_key: str
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    locale: str | None = None
    timezone: str | None = None
    status: str | None = None
    subscribed: bool | None = None
    attributes: dict[str, object] = field(default_factory=dict)
    opt_in: bool | None = None
    consent_source: str | None = None
    consent_version: str | None = None

    def provided(self) -> dict[str, object]:
        """The fields that were given (attributes only when non-empty), for an upsert."""
        values: dict[str, object] = {"email": self.email, "email_key": self.email_key}
        for name in FIELD_NAMES[1:]:
            value = getattr(self, name)
            if value is not None:
                values[name] = value
        if self.attributes:
            values["attributes"] = self.attributes
        return values


# --- email -------------------------------------------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
# Accepts a subset of what email-validator accepts: an ASCII dot-atom local part, then labels
# of at most 63 letters, digits and hyphens and an alphabetic TLD. normalize_email also
# sends to email-validator any domain with a hyphen at a label's edge or a "--" (Punycode and
# reserved R-LDH labels take its IDNA path), special-use names and long addresses. A plain
# character-class regex plus substring tests is twice as fast as spelling labels out in it.
_FAST_EMAIL = re.compile(
    rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@((?:[A-Za-z0-9-]{{1,63}}\.)+[A-Za-z]{{2,63}})"
)
_SPECIAL_USE_SUFFIXES = tuple("." + name for name in SPECIAL_USE_DOMAIN_NAMES)
_ROLE_MAILBOXES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_LONGEST_ROLE_MAILBOX = max(map(len, _ROLE_MAILBOXES))


def normalize_email(value: str) -> tuple[str, str]:
    """Return ``(normalized, key)`` for an address; surrounding whitespace is ignored."""
    candidate = value.strip()
    match = _FAST_EMAIL.fullmatch(candidate)
    if match is not None and len(candidate) <= MAX_EMAIL_LENGTH:
        local, domain = match.groups()
        domain = domain.lower()
        if ("-" not in domain or _hyphens_fit_fast_path(domain)) and not domain.endswith(
            _SPECIAL_USE_SUFFIXES
        ):
            if len(local) <= _LONGEST_ROLE_MAILBOX and local.lower() in _ROLE_MAILBOXES:
                local = local.lower()
            normalized = local + "@" + domain
            return normalized, normalized.lower()
    return _normalize_email_fully(candidate)


def _hyphens_fit_fast_path(domain: str) -> bool:
    # A label starting or ending with "-" is invalid and "--" may be Punycode ("xn--") or a
    # reserved R-LDH label: email-validator handles (and words the errors for) all of them.
    return domain[0] != "-" and "--" not in domain and "-." not in domain and ".-" not in domain


def _normalize_email_fully(candidate: str) -> tuple[str, str]:
    if not candidate:
        raise FieldError("email", "is required", "required")
    if len(candidate) > MAX_EMAIL_LENGTH:
        # email-validator would refuse it too (254 octets), after a slow per-character scan.
        raise FieldError("email", "the email address is too long", "invalid_email")
    try:
        result = validate_email(
            candidate,
            check_deliverability=False,
            test_environment=False,
            globally_deliverable=True,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
            strict=False,
        )
    except EmailNotValidError as exc:
        raise FieldError("email", str(exc), "invalid_email") from None
    normalized = result.normalized
    return normalized, normalized.lower()


# --- phone, locale, timezone, status, booleans --------------------------------------------

_MAX_PHONE_INPUT = 64


def normalize_phone(value: str, default_region: str | None = None) -> str:
    """E.164 form of a phone number; without ``+`` it needs ``default_region`` (``GB``)."""
    text = value.strip()
    if len(text) > _MAX_PHONE_INPUT:
        raise FieldError("phone", "is too long to be a phone number", "invalid_phone")
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        hint = "" if default_region else " (use the international form, starting with +)"
        raise FieldError("phone", f"is not a phone number{hint}", "invalid_phone") from None
    if number.extension:
        raise FieldError("phone", "extensions cannot be stored in E.164 form", "invalid_phone")
    if not phonenumbers.is_valid_number(number):
        raise FieldError("phone", "is not a valid phone number", "invalid_phone")
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164


_LOCALE = re.compile(r"([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|[0-9]{3}))?")
_locale_cache: dict[str, str] = {}


def normalize_locale(value: str) -> str:
    """``language[-Script][-REGION]`` in canonical case, ``-`` separated."""
    cached = _locale_cache.get(value)
    if cached is not None:
        return cached
    match = _LOCALE.fullmatch(value.strip())
    if match is None:
        raise FieldError(
            "locale", "is not a locale such as 'en', 'en-US' or 'pt-BR'", "invalid_locale"
        )
    language, script, region = match.groups()
    parts = [language.lower()]
    if script:
        parts.append(script.title())
    if region:
        parts.append(region.upper())
    normalized = "-".join(parts)
    if len(_locale_cache) < 4096:  # a file has few distinct spellings; bound it anyway
        _locale_cache[value] = normalized
    return normalized


# Entries of some system zoneinfo trees that are not zones a person lives in.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@cache
def _timezones_by_folded_name() -> dict[str, str]:
    return {
        name.casefold(): name
        for name in available_timezones()
        if name not in _NOT_ZONES and not name.startswith(("posix/", "right/"))
    }


def validate_timezone(value: str) -> str:
    """The canonical IANA name (``Europe/London``) for ``value``, in any case."""
    name = _timezones_by_folded_name().get(value.strip().casefold())
    if name is None:
        raise FieldError(
            "timezone", "is not an IANA time zone such as 'Europe/London'", "invalid_timezone"
        )
    return name


def normalize_status(value: str) -> str:
    status = value.strip().lower()
    if status not in CONTACT_STATUSES:
        raise FieldError("status", f"must be one of {', '.join(CONTACT_STATUSES)}", "invalid")
    return status


_TRUE: Final = frozenset({"true", "yes", "1"})
_FALSE: Final = frozenset({"false", "no", "0"})


def parse_bool(field_name: str, value: object) -> bool:
    """A bool, 0/1, or ``true false yes no 1 0`` in any case."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise FieldError(field_name, "must be true or false (yes/no, 1/0)", "invalid_boolean")


# --- text and attributes -------------------------------------------------------------------


def _check_storable(field_name: str, text: str) -> None:
    if "\x00" in text:
        raise FieldError(field_name, "must not contain NUL characters", "invalid")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise FieldError(field_name, "contains an invalid character", "invalid") from None


def normalize_text(field_name: str, value: object) -> str | None:
    """Trimmed text of at most 255 characters; blank → ``None``."""
    if type(value) is not str:
        raise FieldError(field_name, "must be a string", "invalid_type")
    text = value.strip()
    if not text:
        return None
    if len(text) > MAX_TEXT_LENGTH:
        raise FieldError(field_name, f"must be at most {MAX_TEXT_LENGTH} characters", "too_long")
    _check_storable(field_name, text)
    return text


_MAX_JSON_DEPTH = 32


def _json_value(field_name: str, value: object, depth: int) -> object:
    if value is None or isinstance(value, bool | int):
        return value
    if type(value) is str:
        _check_storable(field_name, value)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FieldError(field_name, "must be a finite number", "invalid")
        return value
    if depth >= _MAX_JSON_DEPTH:
        raise FieldError(field_name, "is nested too deeply", "invalid")
    if isinstance(value, list | tuple):
        return [_json_value(field_name, item, depth + 1) for item in value]
    if isinstance(value, Mapping):
        result: dict[str, object] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise FieldError(field_name, "object keys must be strings", "invalid_type")
            _check_storable(field_name, key)
            result[key] = _json_value(field_name, item, depth + 1)
        return result
    raise FieldError(field_name, "is not a JSON value", "invalid_type")


def validate_attribute_key(key: object) -> str:
    if type(key) is not str or not key.strip():
        raise FieldError("attributes", "attribute names must be non-blank strings", "invalid")
    if len(key) > MAX_TEXT_LENGTH:
        raise FieldError(
            "attributes", f"attribute names must be at most {MAX_TEXT_LENGTH} characters"
        )
    _check_storable("attributes", key)
    return key


def validate_attributes(value: object) -> dict[str, object]:
    """A copy of a JSON object of attributes, checked to be storable."""
    if not isinstance(value, Mapping):
        raise FieldError("attributes", "must be a JSON object", "invalid_type")
    return {
        validate_attribute_key(key): _json_value(f"attributes.{key}", item, 1)
        for key, item in value.items()
    }


def split_type_hint(header: str) -> tuple[str, AttributeType | None]:
    """``"age:number"`` → ``("age", "number")``; ``"utm:source"`` → ``("utm:source", None)``."""
    name, colon, hint = header.rpartition(":")
    if colon and name.strip():
        kind = ATTRIBUTE_TYPES.get(hint.strip().lower())
        if kind is not None:
            return name.strip(), kind
    return header, None


_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def attribute_converter(name: str, kind: AttributeType) -> Callable[[str], object]:
    """:func:`convert_attribute` for one column, chosen once (a CSV import converts every
    cell of a typed column with it): the same results and errors, less work per cell."""
    field_name = f"attributes.{name}"
    if kind == "string":
        return str
    if kind == "number":
        integer, decimal = _INTEGER.fullmatch, _DECIMAL.fullmatch

        def number(text: str) -> object:
            stripped = text.strip()
            if integer(stripped):
                return int(stripped)
            if decimal(stripped):
                value = float(stripped)
                if math.isfinite(value):
                    return value
            raise FieldError(field_name, "must be a number", "invalid_number")

        return number
    if kind == "date":
        # Dates repeat a lot in real files; a bounded memo skips parsing them again.
        seen: dict[str, str] = {}

        def iso_date(text: str) -> object:
            stripped = text.strip()
            known = seen.get(stripped)
            if known is not None:
                return known
            value = convert_attribute(name, "date", stripped)
            if len(seen) < 4096:
                seen[stripped] = value  # type: ignore[assignment]
            return value

        return iso_date
    return lambda text: convert_attribute(name, kind, text)


def convert_attribute(name: str, kind: AttributeType, text: str) -> object:
    """Convert a CSV cell for a typed attribute column.

    ``string`` keeps the cell as it is; ``number`` gives an int (``42``) or a finite float
    (``1.5``, ``2e3``); ``boolean`` takes ``true false yes no 1 0``; ``date`` takes
    ``YYYY-MM-DD``; ``datetime`` takes ISO 8601 (no offset means UTC) and gives RFC 3339 UTC
    (``2024-05-01T09:30:00Z``). Dates are stored as those strings: JSON has no date type.
    """
    field_name = f"attributes.{name}"
    if kind == "string":
        return text
    stripped = text.strip()
    if kind == "number":
        if _INTEGER.fullmatch(stripped):
            return int(stripped)
        if _DECIMAL.fullmatch(stripped):
            number = float(stripped)
            if math.isfinite(number):
                return number
        raise FieldError(field_name, "must be a number", "invalid_number")
    if kind == "boolean":
        return parse_bool(field_name, stripped)
    if kind == "date":
        try:
            if _ISO_DATE.fullmatch(stripped):
                return date.fromisoformat(stripped).isoformat()
        except ValueError:
            pass
        raise FieldError(field_name, "must be a date as YYYY-MM-DD", "invalid_date")
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise FieldError(field_name, "must be an ISO 8601 date and time", "invalid_date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- column headers and JSON keys ----------------------------------------------------------

_KEY_NOISE = re.compile(r"[\s_.\-]+")
_KEY_ALIASES: Final[dict[str, str]] = {
    "email": "email",
    "emailaddress": "email",
    "mail": "email",
    "mailaddress": "email",
    "externalid": "external_id",
    "firstname": "first_name",
    "givenname": "first_name",
    "forename": "first_name",
    "lastname": "last_name",
    "surname": "last_name",
    "familyname": "last_name",
    "phone": "phone",
    "phonenumber": "phone",
    "telephone": "phone",
    "telephonenumber": "phone",
    "mobile": "phone",
    "mobilephone": "phone",
    "mobilenumber": "phone",
    "locale": "locale",
    "language": "locale",
    "lang": "locale",
    "timezone": "timezone",
    "tz": "timezone",
    "status": "status",
    "subscribed": "subscribed",
    "optin": "opt_in",
    "optedin": "opt_in",
    "consentsource": "consent_source",
    "consentversion": "consent_version",
    "attributes": "attributes",
    "data": "attributes",
    "createdat": "created_at",
    "updatedat": "updated_at",
}


def canonical_key(key: str) -> str | None:
    """The field a header or JSON key names, ignoring case, spaces, ``_ - .``; else ``None``.

    ``"E-mail"``, ``"Email Address"`` → ``email``; ``"firstName"``, ``"First Name"`` →
    ``first_name``; ``"data"`` → ``attributes``; ``"Created At"`` → ``created_at`` (a
    read-only column). ``"id"`` is deliberately not guessed to be ``external_id``.
    """
    return _KEY_ALIASES.get(_KEY_NOISE.sub("", key).casefold())


# --- whole contacts ------------------------------------------------------------------------

_Normaliser = Callable[[object, str | None], object]


def _text_field(name: str) -> _Normaliser:
    def normalise(value: object, _region: str | None) -> str | None:
        # The common case in one call (imports run this for every cell); anything unusual
        # goes through normalize_text for its checks and messages.
        if type(value) is str:
            text = value.strip()
            if len(text) <= MAX_TEXT_LENGTH and text.isascii() and "\x00" not in text:
                return text or None
        return normalize_text(name, value)

    return normalise


def _external_id(value: object, _region: str | None) -> str | None:
    if type(value) is int:
        value = str(value)
    return normalize_text("external_id", value)


def _string_value(field_name: str, value: object) -> str | None:
    if type(value) is not str:
        raise FieldError(field_name, "must be a string", "invalid_type")
    return value if value.strip() else None


def _phone(value: object, region: str | None) -> str | None:
    if type(value) is int:
        value = str(value)
    text = _string_value("phone", value)
    return None if text is None else normalize_phone(text, region)


def _locale(value: object, _region: str | None) -> str | None:
    text = _string_value("locale", value)
    return None if text is None else normalize_locale(text)


def _timezone(value: object, _region: str | None) -> str | None:
    text = _string_value("timezone", value)
    return None if text is None else validate_timezone(text)


def _status(value: object, _region: str | None) -> str | None:
    text = _string_value("status", value)
    return None if text is None else normalize_status(text)


def _boolean(name: str) -> _Normaliser:
    return lambda value, _region: None if value == "" else parse_bool(name, value)


_NORMALISERS: Final[dict[str, _Normaliser]] = {
    "external_id": _external_id,
    "first_name": _text_field("first_name"),
    "last_name": _text_field("last_name"),
    "phone": _phone,
    "locale": _locale,
    "timezone": _timezone,
    "status": _status,
    "subscribed": _boolean("subscribed"),
    "opt_in": _boolean("opt_in"),
    "consent_source": _text_field("consent_source"),
    "consent_version": _text_field("consent_version"),
}


def contact_from_fields(
    fields: Mapping[str, object],
    attributes: dict[str, object],
    *,
    default_region: str | None = None,
) -> ContactInput:
    """Build a contact from field values and attributes the caller has already checked.

    ``fields`` holds field names only (``email`` required); ``None`` or ``""`` means not
    provided. Raises :class:`FieldError` on the email first, then on the first bad field.
    """
    email_value = fields.get("email")
    if type(email_value) is not str:
        if email_value is None:
            raise FieldError("email", "is required", "required")
        raise FieldError("email", "must be a string", "invalid_type")
    email, email_key = normalize_email(email_value)
    contact = ContactInput(email, email_key, attributes=attributes)
    normalisers = _NORMALISERS
    for name, value in fields.items():
        if value is not None:
            normaliser = normalisers.get(name)
            if normaliser is not None:
                setattr(contact, name, normaliser(value, default_region))
            elif name != "email":
                raise FieldError(name, "is not a contact field", "unknown_field")
    return contact


def contact_from_mapping(
    row: Mapping[str, object], *, default_region: str | None = None
) -> ContactInput:
    """Validate a mapping of field names (plus an ``attributes`` object) into a contact."""
    fields = {key: value for key, value in row.items() if key != "attributes"}
    contact = contact_from_fields(fields, {}, default_region=default_region)
    raw_attributes = row.get("attributes")
    if raw_attributes is not None:
        contact.attributes = validate_attributes(raw_attributes)
    return contact
