"""Locale tags of template versions, and which locale variant a contact gets."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol, TypeVar

from postroom.errors import ValidationFailed

# BCP 47 in the shapes email audiences use: language, then script/region/variant subtags.
_TAG = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}\Z")


class HasLocale(Protocol):
    @property
    def locale(self) -> str: ...


V = TypeVar("V", bound=HasLocale)


def normalize_locale(raw: str, field: str = "locale") -> str:
    """``fr_ca`` → ``fr-CA``, ``zh-hant-tw`` → ``zh-Hant-TW``; anything else is a 422."""
    value = raw.strip()
    if not _TAG.match(value):
        raise ValidationFailed.single(
            field, f"'{raw}' is not a locale tag (like en, fr or fr-CA)", "invalid_locale"
        )
    language, *rest = value.replace("_", "-").split("-")
    parts = [language.lower()]
    for part in rest:
        if len(part) == 2 and part.isalpha():
            parts.append(part.upper())  # region
        elif len(part) == 4 and part.isalpha():
            parts.append(part.title())  # script
        else:
            parts.append(part.lower())
    return "-".join(parts)


def language_of(locale: str) -> str:
    return locale.replace("_", "-").split("-", 1)[0].lower()


def pick_version(
    published_versions: Iterable[V], contact_locale: str | None, default_locale: str
) -> V | None:
    """The locale variant to send: the contact's exact locale (``fr-CA``), else its
    language (``fr``), else the template's default locale (exact, then its language).
    None when not even the default locale has a published version."""
    by_locale = {version.locale.lower(): version for version in published_versions}
    wanted = [contact_locale, language_of(contact_locale)] if contact_locale else []
    wanted += [default_locale, language_of(default_locale)]
    for locale in wanted:
        found = by_locale.get(locale.replace("_", "-").lower())
        if found is not None:
            return found
    return None
