"""Campaign rules: editing, the lifecycle (``states``) and progress (audience previews and
test sends are in ``previews``).

Every transition reads the campaign, asks ``states.target`` and applies the change with a
conditional UPDATE on the status it read; losing a race is the same 409 as asking for a
refused transition. The campaign's send carries what the delivery engine must obey
(``states.SEND_STATE``), and each transition writes its ``campaign.*`` event in the same
transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from postroom.campaigns import states
from postroom.campaigns.content import (
    ContentGone,
    check_references,
    domain_exists,
    freeze,
    sender_domain,
    stored_content,
)
from postroom.campaigns.fanout import FANOUT_JOB
from postroom.campaigns.repository import REMAINING, CampaignRepository
from postroom.campaigns.schemas import (
    CampaignCreate,
    CampaignUpdate,
    ScheduleIn,
)
from postroom.campaigns.timing import calendar_open, resolve_instant, zone
from postroom.contacts.audience import Audience
from postroom.contacts.audience_service import AudienceService
from postroom.contacts.contact_fields import FieldError, normalize_email
from postroom.delivery.sends import SendSpec, create_send
from postroom.errors import NotFound, StateConflict, ValidationFailed
from postroom.events.service import record
from postroom.ids import uuid7
from postroom.jobs import repository as jobs
from postroom.models.campaigns import Campaign
from postroom.models.delivery import PRIORITY_CAMPAIGN, Delivery

CAMPAIGN = "campaign"
RATE_WINDOW = timedelta(seconds=60)


@dataclass(slots=True)
class ProgressView:
    counts: dict[str, int]
    total: int
    rate: float
    eta_seconds: float | None


class CampaignService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID, now: datetime) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now
        self.repo = CampaignRepository(session, workspace_id)

    # -- reading -----------------------------------------------------------------------------

    async def get(self, campaign_id: uuid.UUID) -> Campaign:
        campaign = await self.repo.get(campaign_id)
        if campaign is None:
            raise NotFound(CAMPAIGN, campaign_id)
        return campaign

    async def page(
        self, after: uuid.UUID | None, limit: int, status: str | None = None
    ) -> list[Campaign]:
        return await self.repo.page(after, limit, status)

    async def deliveries(
        self, campaign_id: uuid.UUID, status: str | None, after: uuid.UUID | None, limit: int
    ) -> list[Delivery]:
        """The campaign's deliveries (never its test sends'), up to ``limit + 1``."""
        campaign = await self.get(campaign_id)
        if campaign.send_id is None:
            return []
        return await self.repo.deliveries(campaign.send_id, status, after, limit)

    async def reload(self, campaign_id: uuid.UUID) -> Campaign:
        campaign = await self.get(campaign_id)
        return await self.repo.refresh(campaign)

    async def progress(self, campaign: Campaign) -> ProgressView | None:
        if campaign.send_id is None:
            return None
        counts = await self.repo.counts(campaign.send_id)
        sent_recently = await self.repo.sent_since(campaign.send_id, self.now - RATE_WINDOW)
        rate = sent_recently / RATE_WINDOW.total_seconds()
        remaining = sum(counts[s] for s in REMAINING)
        eta = remaining / rate if rate > 0 and remaining else (0.0 if not remaining else None)
        return ProgressView(counts, sum(counts.values()), rate, eta)

    # -- editing -----------------------------------------------------------------------------

    async def create(self, body: CampaignCreate) -> Campaign:
        values = await self._checked(body.model_dump(exclude_unset=True, by_alias=False))
        campaign = Campaign(
            id=uuid7(),
            workspace_id=self.workspace_id,
            status="draft",
            name=body.name,
            content=values["content"],
            subject=values.get("subject"),
            from_email=values["from_email"],
            from_name=values.get("from_name", ""),
            reply_to=values.get("reply_to"),
            audience=values.get("audience", Audience().model_dump(mode="json")),
            track_opens=values.get("track_opens", True),
            track_clicks=values.get("track_clicks", True),
            timezone=values.get("timezone", "UTC"),
            tags=values.get("tags", []),
            calendar=values.get("calendar"),
            created_at=self.now,
            updated_at=self.now,
        )
        await self.repo.add(campaign)
        return campaign

    async def update(self, campaign_id: uuid.UUID, body: CampaignUpdate) -> Campaign:
        campaign = await self.get(campaign_id)
        states.target("edit", campaign.status)
        given = body.model_dump(exclude_unset=True, by_alias=False)
        for required in ("name", "content", "from_"):
            if required in given and given[required] is None:
                raise ValidationFailed.single(required.rstrip("_"), "cannot be null", "required")
        values = await self._checked(given)
        values["updated_at"] = self.now
        if not await self.repo.move(campaign.id, ("draft", "scheduled"), values):
            await self._conflict(campaign.id, "edit")
        return await self.repo.refresh(campaign)

    async def _checked(self, given: dict[str, Any]) -> dict[str, Any]:
        """Column values from the request fields, every rule checked (422 naming fields)."""
        values: dict[str, Any] = {}
        if "name" in given:
            values["name"] = given["name"]
        if "content" in given:
            values["content"] = stored_content(given["content"])
            await check_references(self.session, self.workspace_id, values["content"])
        if "subject" in given:
            values["subject"] = given["subject"] or None
        if "from_" in given:
            sender = given["from_"]
            email = _address(sender["email"], "from.email")
            if not await domain_exists(self.session, self.workspace_id, email):
                raise ValidationFailed.single(
                    "from.email",
                    f"{sender_domain(email)} is not a sending domain of this workspace "
                    "(add it under /v1/domains)",
                    "unknown_sending_domain",
                )
            values["from_email"] = email
            values["from_name"] = sender.get("name") or ""
        if "reply_to" in given:
            values["reply_to"] = (
                _address(given["reply_to"], "reply_to") if given["reply_to"] else None
            )
        if "audience" in given:
            audience = Audience.model_validate(given["audience"] or {})
            await AudienceService(self.session, self.workspace_id, self.now).check(
                audience, prefix="audience."
            )
            values["audience"] = audience.model_dump(mode="json", exclude_none=True)
        for flag in ("track_opens", "track_clicks"):
            if given.get(flag) is not None:
                values[flag] = given[flag]
        if given.get("timezone") is not None:
            zone(given["timezone"])
            values["timezone"] = given["timezone"]
        if given.get("tags") is not None:
            values["tags"] = given["tags"]
        if "send_calendar" in given:
            values["calendar"] = given["send_calendar"]
        return values

    async def delete(self, campaign_id: uuid.UUID) -> None:
        """Deletes the campaign; its send and deliveries stay (contact history, stats)."""
        campaign = await self.get(campaign_id)
        states.target("delete", campaign.status)
        await self.repo.delete(campaign)

    async def duplicate(self, campaign_id: uuid.UUID) -> Campaign:
        source = await self.get(campaign_id)
        copy = Campaign(
            id=uuid7(),
            workspace_id=self.workspace_id,
            status="draft",
            name=_copy_name(source.name),
            content=dict(source.content),
            subject=source.subject,
            from_email=source.from_email,
            from_name=source.from_name,
            reply_to=source.reply_to,
            audience=dict(source.audience),
            track_opens=source.track_opens,
            track_clicks=source.track_clicks,
            timezone=source.timezone,
            tags=list(source.tags),
            calendar=dict(source.calendar) if source.calendar else None,
            created_at=self.now,
            updated_at=self.now,
        )
        await self.repo.add(copy)
        return copy

    # -- lifecycle ---------------------------------------------------------------------------

    async def schedule(self, campaign_id: uuid.UUID, body: ScheduleIn) -> Campaign:
        campaign = await self.get(campaign_id)
        states.target("schedule", campaign.status)
        when = resolve_instant(body.scheduled_at, body.timezone or campaign.timezone, body.fold)
        if when <= self.now:
            raise ValidationFailed.single(
                "scheduled_at", f"{when.isoformat()} is in the past", "in_the_past"
            )
        await self.ready(campaign)
        await self._move(campaign, "schedule", {"scheduled_at": when}, {"at": when.isoformat()})
        return await self.repo.refresh(campaign)

    async def unschedule(self, campaign_id: uuid.UUID) -> Campaign:
        campaign = await self.get(campaign_id)
        await self._move(campaign, "unschedule", {"scheduled_at": None})
        return await self.repo.refresh(campaign)

    async def send_now(self, campaign_id: uuid.UUID) -> Campaign:
        """``draft|scheduled → sending``: freeze the content into a send and queue the
        fan-out job; waits at once when the send calendar is closed."""
        campaign = await self.get(campaign_id)
        states.target("send", campaign.status)
        content = await self.ready(campaign)
        await self._move(campaign, "send", {"scheduled_at": campaign.scheduled_at})
        await self.begin(campaign, content)
        return await self.repo.refresh(campaign)

    async def ready(self, campaign: Campaign) -> dict[str, Any]:
        """The frozen content now; 422 when content or sending domain is gone."""
        try:
            content = await freeze(
                self.session, self.workspace_id, campaign.content, campaign.subject
            )
        except ContentGone as gone:
            raise ValidationFailed.single("content", str(gone), "content_gone") from None
        if not await domain_exists(self.session, self.workspace_id, campaign.from_email):
            raise ValidationFailed.single(
                "from.email",
                f"{sender_domain(campaign.from_email)} is no longer a sending domain",
                "unknown_sending_domain",
            )
        return content

    async def begin(self, campaign: Campaign, content: dict[str, Any]) -> None:
        """For a campaign just moved to ``sending``: its send and the fan-out job."""
        send = await create_send(
            self.session,
            self.workspace_id,
            SendSpec(
                kind="campaign",
                content=content,
                from_email=campaign.from_email,
                from_name=campaign.from_name,
                reply_to=campaign.reply_to,
                purpose="marketing",
                priority=PRIORITY_CAMPAIGN,
                track_opens=campaign.track_opens,
                track_clicks=campaign.track_clicks,
                list_ids=[str(x) for x in campaign.audience.get("lists") or []],
                campaign_id=campaign.id,
                tags=list(campaign.tags),
            ),
            self.now,
        )
        job = await jobs.enqueue(
            self.session,
            kind=FANOUT_JOB,
            payload={"campaign_id": str(campaign.id)},
            now=self.now,
            workspace_id=self.workspace_id,
            priority=10,
        )
        await self.repo.move(
            campaign.id,
            ("sending",),
            {
                "send_id": send.id,
                "fanout_job_id": job.id,
                "started_at": self.now,
                "fanout_cursor": None,
                "fanned_out_at": None,
                "recipients": None,
                "updated_at": self.now,
            },
        )
        if not calendar_open(campaign.calendar, campaign.timezone, self.now):
            await self.apply(campaign.id, "wait", send_id=send.id)

    async def pause(self, campaign_id: uuid.UUID) -> Campaign:
        campaign = await self.get(campaign_id)
        await self._move(campaign, "pause")
        return await self.repo.refresh(campaign)

    async def resume(self, campaign_id: uuid.UUID) -> Campaign:
        campaign = await self.get(campaign_id)
        states.target("resume", campaign.status)
        await self._move(campaign, "resume")
        if not calendar_open(campaign.calendar, campaign.timezone, self.now):
            await self.apply(campaign.id, "wait", send_id=campaign.send_id)
        return await self.repo.refresh(campaign)

    async def cancel(self, campaign_id: uuid.UUID) -> Campaign:
        campaign = await self.get(campaign_id)
        await self._move(campaign, "cancel", {"finished_at": self.now})
        if campaign.send_id is not None:
            await self.repo.cancel_rows(campaign.send_id, self.now)
        return await self.repo.refresh(campaign)

    async def retry_failed(self, campaign_id: uuid.UUID) -> int:
        campaign = await self.get(campaign_id)
        states.target("retry_failed", campaign.status)
        if campaign.send_id is None:
            return 0
        return await self.repo.requeue_failed(campaign.send_id, self.now)

    async def fail(self, campaign_id: uuid.UUID, reason: str) -> bool:
        """``sending|waiting → failed``: its remaining rows are cancelled."""
        moved = await self.apply(
            campaign_id,
            "fail",
            extra={"failure_reason": reason, "finished_at": self.now},
            data={"reason": reason},
        )
        campaign = await self.repo.get(campaign_id)
        if moved and campaign is not None and campaign.send_id is not None:
            await self.repo.cancel_rows(campaign.send_id, self.now)
        return moved

    async def _move(
        self,
        campaign: Campaign,
        action: str,
        extra: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        states.target(action, campaign.status)
        if not await self.apply(
            campaign.id,
            action,
            extra=extra,
            data=data,
            send_id=campaign.send_id,
            from_=(campaign.status,),
        ):
            await self._conflict(campaign.id, action)

    async def apply(
        self,
        campaign_id: uuid.UUID,
        action: str,
        *,
        extra: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        send_id: uuid.UUID | None = None,
        from_: tuple[str, ...] | None = None,
    ) -> bool:
        """Apply ``action`` if the campaign is still in one of its source statuses:
        status, the send's state and the event, together. False when it was not."""
        table = states.TRANSITIONS[action]
        sources = from_ or tuple(table)
        moved = False
        for source in sources:
            to = table[source]
            values = {"status": to, "updated_at": self.now, **(extra or {})}
            if await self.repo.move(campaign_id, (source,), values):
                moved = True
                break
        if not moved:
            return False
        if send_id is None:
            row = await self.repo.get(campaign_id)
            send_id = row.send_id if row is not None else None
        new_state = states.SEND_STATE.get(to)
        if send_id is not None and new_state is not None:
            await self.repo.set_send_state(send_id, new_state)
        event = states.EVENTS.get(action)
        if event is not None:
            await record(
                self.session,
                workspace_id=self.workspace_id,
                type=event,
                occurred_at=self.now,
                resource_type=CAMPAIGN,
                resource_id=campaign_id,
                data={"from": source, "to": to, **(data or {})},
            )
        return True

    async def _conflict(self, campaign_id: uuid.UUID, action: str) -> None:
        """The campaign changed under us: 409 with the status it has now."""
        campaign = await self.reload(campaign_id)
        states.target(action, campaign.status)
        raise StateConflict(CAMPAIGN, campaign.status, action)


def _address(raw: str, field: str) -> str:
    try:
        return normalize_email(raw)[0]
    except FieldError as error:
        raise ValidationFailed.single(
            field, str(error).removeprefix("email: "), "invalid_email"
        ) from None


def _copy_name(name: str) -> str:
    suffix = " (copy)"
    return (name[: 200 - len(suffix)] + suffix) if not name.endswith(suffix) else name
