"""ORM models, one module per aggregate. Importing this package registers every table
on ``Base.metadata`` (Alembic and the drift test rely on that)."""

from postroom.models.base import Base
from postroom.models.contacts import Contact, ContactList, Segment, Subscription, Suppression
from postroom.models.platform import Event, IdempotencyRecord, Job, Upload, UploadChunk
from postroom.models.workspaces import ApiKey, Workspace

__all__ = [
    "ApiKey",
    "Base",
    "Contact",
    "ContactList",
    "Event",
    "IdempotencyRecord",
    "Job",
    "Segment",
    "Subscription",
    "Suppression",
    "Upload",
    "UploadChunk",
    "Workspace",
]
