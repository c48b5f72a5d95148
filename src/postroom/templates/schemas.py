"""Request and response bodies for templates and their versions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TemplateKind = Literal["marketing", "transactional"]
VersionStatus = Literal["draft", "published", "unpublished"]
VariableType = Literal["string", "number", "boolean", "date"]

MAX_SOURCE = 1_000_000  # characters of one field; a real email is far below


class VariableSpec(BaseModel):
    """A declared variable: ``name`` (``first_name``, ``data.plan`` or ``contact.nick``),
    its type and the value used when a message provides none."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    type: VariableType = "string"
    fallback: str | bool | int | float | None = None


class TemplateWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: TemplateKind = "marketing"
    description: str | None = Field(None, max_length=10_000)
    default_locale: str = Field("en", min_length=2, max_length=35)


class TemplatePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    default_locale: str | None = Field(None, min_length=2, max_length=35)


class PublishedLocale(BaseModel):
    locale: str
    version_id: uuid.UUID
    number: int


class TemplateOut(BaseModel):
    id: uuid.UUID
    name: str
    kind: TemplateKind
    description: str | None
    default_locale: str
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    published: list[PublishedLocale] = Field(
        default_factory=list, description="The published version of each locale"
    )


class VersionWrite(BaseModel):
    """A new draft. With ``from_version`` it starts as a copy of that version (of this
    template) and the fields given here replace the copied ones."""

    model_config = ConfigDict(extra="forbid")

    from_version: uuid.UUID | None = None
    subject: str | None = Field(None, max_length=10_000)
    preheader: str | None = Field(None, max_length=10_000)
    html: str | None = Field(None, max_length=MAX_SOURCE)
    text: str | None = Field(None, max_length=MAX_SOURCE)
    mjml: str | None = Field(None, max_length=MAX_SOURCE)
    locale: str | None = Field(None, min_length=2, max_length=35)
    variables: list[VariableSpec] | None = Field(None, max_length=200)


class VersionPatch(BaseModel):
    """Change a draft: absent fields stay, ``null`` clears an optional field."""

    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(None, max_length=10_000)
    preheader: str | None = Field(None, max_length=10_000)
    html: str | None = Field(None, max_length=MAX_SOURCE)
    text: str | None = Field(None, max_length=MAX_SOURCE)
    mjml: str | None = Field(None, max_length=MAX_SOURCE)
    locale: str | None = Field(None, min_length=2, max_length=35)
    variables: list[VariableSpec] | None = Field(None, max_length=200)


class TemplateIssue(BaseModel):
    """A warning (or error) about a template field; ``line`` and ``column`` are 1-based."""

    field: str
    message: str
    line: int | None
    column: int | None
    code: str


class VersionSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    template_id: uuid.UUID
    number: int
    status: VersionStatus
    locale: str
    subject: str
    created_at: datetime
    created_by: uuid.UUID | None
    updated_at: datetime
    published_at: datetime | None
    published_by: uuid.UUID | None


class VersionOut(VersionSummary):
    preheader: str | None
    html: str
    text: str | None
    mjml: str | None
    variables: list[VariableSpec]
    compiled_html: str | None
    compiled_text: str | None
    warnings: list[TemplateIssue] = Field(default_factory=list)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version_id: uuid.UUID


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: uuid.UUID | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class PreviewOut(BaseModel):
    subject: str
    preheader: str
    html: str
    text: str
    warnings: list[TemplateIssue]


class FieldDiffOut(BaseModel):
    field: str
    changed: bool
    diff: str = Field(description="Unified diff from `against` to this version")
    added_lines: int
    removed_lines: int


class VersionDiffOut(BaseModel):
    version_id: uuid.UUID
    against: uuid.UUID
    fields: list[FieldDiffOut]
