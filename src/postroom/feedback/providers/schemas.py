"""Request and response bodies of ``/v1/feedback-providers``. Secrets (Mailgun's signing
key, Postmark's password) are accepted, never returned."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from postroom.feedback.providers.events import ProviderName


class ProviderCredentialsIn(BaseModel):
    """What one provider needs (the others' fields must be absent):

    - ``ses``: ``topic_arns`` — the SNS topics whose notifications this workspace accepts;
    - ``sendgrid``: ``public_key`` — the Signed Event Webhook verification key (base64 or PEM);
    - ``mailgun``: ``signing_key`` — the HTTP webhook signing key;
    - ``postmark``: ``username`` and ``password`` — the Basic credentials put in the
      webhook URL configured at Postmark.
    """

    model_config = ConfigDict(extra="forbid")

    topic_arns: list[str] | None = Field(None, max_length=20)
    public_key: str | None = Field(None, max_length=4000)
    signing_key: str | None = Field(None, max_length=500)
    username: str | None = Field(None, max_length=200)
    password: str | None = Field(None, max_length=500)


class ProviderStats(BaseModel):
    received: int = Field(description="Events received in verified calls")
    applied: int = Field(description="Events that changed something")
    unchanged: int = Field(description="Matched events that changed nothing (already applied)")
    unmatched: int = Field(
        description="Events whose delivery is unknown here (answered 200 and ignored, so "
        "the provider does not retry them)"
    )
    last_event_at: datetime | None


class ProviderCredentialsOut(BaseModel):
    provider: ProviderName
    webhook_url: str = Field(description="The URL to configure at the provider")
    topic_arns: list[str] = Field(default_factory=list)
    public_key: str | None = None
    username: str | None = None
    secret_set: bool = Field(description="A signing key or password is stored (never shown)")
    subscription_confirmed_at: datetime | None = None
    stats: ProviderStats
    created_at: datetime
    updated_at: datetime


class ProviderCredentialsList(BaseModel):
    data: list[ProviderCredentialsOut]
    next_cursor: str | None = None


class WebhookAnswer(BaseModel):
    status: str = Field(
        description="ok | duplicate | subscription_confirmed | ignored (nothing to apply)"
    )
    received: int = 0
    applied: int = 0
    unchanged: int = 0
    unmatched: int = 0
