"""ORM models, one module per aggregate. Importing this package registers every table
on ``Base.metadata`` (Alembic and the drift test rely on that)."""

# Modules of later domains; each adds its own names to __all__ when it has models.
from postroom.models import analytics, campaigns, feedback, relays, webhooks  # noqa: F401
from postroom.models.base import Base
from postroom.models.contacts import Contact, ContactList, Segment, Subscription, Suppression
from postroom.models.delivery import Delivery, Send
from postroom.models.domains import DkimKey, SendingDomain
from postroom.models.double_opt_in import ListConfirmation
from postroom.models.platform import Event, IdempotencyRecord, Job, Upload, UploadChunk
from postroom.models.providers import FeedbackProvider, ProviderReplay
from postroom.models.templates import Template, TemplateVersion
from postroom.models.workspaces import ApiKey, Workspace

__all__ = [
    "ApiKey",
    "Base",
    "Contact",
    "ContactList",
    "Delivery",
    "DkimKey",
    "Event",
    "FeedbackProvider",
    "IdempotencyRecord",
    "Job",
    "ListConfirmation",
    "ProviderReplay",
    "Segment",
    "Send",
    "SendingDomain",
    "Subscription",
    "Suppression",
    "Template",
    "TemplateVersion",
    "Upload",
    "UploadChunk",
    "Workspace",
]
