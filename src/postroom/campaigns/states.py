"""The campaign state machine: which action may move a campaign from which status to which.

This table is the whole rule; services ask ``target()`` and apply the change with a
conditional UPDATE (``WHERE status = <the status read>``), so two requests or two
scheduler processes racing on one campaign cannot both win. Anything not in the table is a
409 naming the current status.
"""

from __future__ import annotations

from typing import Final

from postroom.errors import StateConflict

GONE: Final = "(gone)"

# action -> {from status: to status}
TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    "edit": {"draft": "draft", "scheduled": "scheduled"},
    "delete": dict.fromkeys(("draft", "cancelled", "sent", "failed"), GONE),
    "retry_failed": {s: s for s in ("sending", "waiting", "paused", "sent")},
    "fail": {"sending": "failed", "waiting": "failed"},
    "schedule": {"draft": "scheduled", "scheduled": "scheduled"},
    "unschedule": {"scheduled": "draft"},
    "send": {"draft": "sending", "scheduled": "sending"},
    "start": {"scheduled": "sending"},  # the scheduled time was reached
    "wait": {"sending": "waiting"},  # outside the send calendar
    "open": {"waiting": "sending"},  # the send calendar's window opened
    "pause": {"sending": "paused", "waiting": "paused"},
    "resume": {"paused": "sending"},  # or "waiting" when the calendar is closed
    "cancel": dict.fromkeys(("scheduled", "sending", "waiting", "paused"), "cancelled"),
    "complete": {"sending": "sent"},  # every delivery has had its first attempt
}

# "duplicate" is allowed from every status and makes a new draft.
ALWAYS: Final = frozenset({"duplicate"})

# What the campaign's send does in each status: the engine claims rows of active sends
# only, and cancels the rows of cancelled ones.
SEND_STATE: Final[dict[str, str]] = {
    "sending": "active",
    "sent": "active",  # deferred rows keep retrying
    "waiting": "paused",
    "paused": "paused",
    "cancelled": "cancelled",
    "failed": "cancelled",
}

# The event written when a campaign enters a status by an action.
EVENTS: Final[dict[str, str]] = {
    "schedule": "campaign.scheduled",
    "send": "campaign.sending",
    "start": "campaign.sending",
    "open": "campaign.sending",
    "wait": "campaign.waiting",
    "pause": "campaign.paused",
    "resume": "campaign.resumed",
    "cancel": "campaign.cancelled",
    "complete": "campaign.sent",
    "fail": "campaign.failed",
}

_ACTION_WORDS = {"retry_failed": "retry the failed deliveries of", "fail": "fail"}


def allowed_from(action: str) -> tuple[str, ...]:
    return tuple(TRANSITIONS[action])


def target(action: str, status: str) -> str:
    """The status ``action`` leads to from ``status``; ``StateConflict`` (409) otherwise."""
    if action in ALWAYS:
        return status
    to = TRANSITIONS[action].get(status)
    if to is None:
        raise StateConflict("campaign", status, _ACTION_WORDS.get(action, action))
    return to
