"""Public endpoints reached from mail: open pixel, click redirect, unsubscribe (RFC 8058
one-click included), preferences, view in browser. No auth: every token is signed, and a
bad token changes nothing and never redirects anywhere."""

from __future__ import annotations

import base64
import html
import uuid
from collections.abc import Callable, Coroutine
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from postroom.analytics.classify import machine_reason
from postroom.context import AppContext
from postroom.http.access import public
from postroom.http.deps import Ctx, Session
from postroom.http.routing import ApiRoute
from postroom.tracking.links import link_id
from postroom.tracking.service import LinkService
from postroom.tracking.tokens import DeliveryRef, TrackingLinks

router = APIRouter(route_class=ApiRoute, tags=["public"], include_in_schema=True)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "X-Robots-Tag": "noindex",
    "Referrer-Policy": "no-referrer",
}


@lru_cache(maxsize=1)
def pages() -> Environment:
    return Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True),
    )


def page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = pages().get_template(name).render(**values)
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def not_found() -> HTMLResponse:
    return page("not_found.html", 404, title="Link not valid")


def _links(request: Request) -> TrackingLinks:
    links: TrackingLinks | None = getattr(request.app.state, "tracking_links", None)
    if links is None:
        links = TrackingLinks(request.app.state.ctx)
        request.app.state.tracking_links = links
    return links


def _engagement(
    ctx: AppContext, ref: DeliveryRef, kind: str, request: Request, data: dict[str, Any]
) -> None:
    user_agent = (request.headers.get("user-agent") or "")[:300]
    ip = request.client.host if request.client else None
    extra: dict[str, Any] = {"user_agent": user_agent, "ip": ip}
    # Privacy proxies and scanners are told apart here, without the database; the
    # analytics consumer adds the checks that need the delivery's send time.
    reason = machine_reason(
        "open" if kind == "email.opened" else "click", user_agent, ip, request.method
    )
    if reason is not None:
        extra["machine"] = reason
    if request.method == "HEAD":
        extra["method"] = "HEAD"
    ctx.engagement.add(
        {
            "workspace_id": ref.workspace_id,
            "type": kind,
            "contact_id": ref.contact_id,
            "resource_type": "delivery",
            "resource_id": ref.delivery_id,
            "data": {"send_id": str(ref.send_id), **extra, **data},
            "occurred_at": ctx.clock.now(),
        }
    )


class EngagementRoute(ApiRoute):
    """The open pixel and click redirect: public, no path ids and no database on the
    request path (opens and clicks go to the in-memory buffer), so they skip the session
    ``ApiRoute`` opens for every request (~10 % of their CPU in bench/tracking_load.py).
    Their access is still declared (``public``) and checked at construction."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = APIRoute.get_route_handler(self)

        async def run(request: Request) -> Response:
            request.state.principal = None
            return await handler(request)

        return run


async def open_pixel(token: str, request: Request) -> Response:
    # No dependencies on the two hottest public routes: FastAPI runs a sync dependency
    # (``Ctx``) in a worker thread, which halved their throughput (bench/tracking_load.py).
    ref = _links(request).read_open(token)
    if ref is not None:
        _engagement(request.app.state.ctx, ref, "email.opened", request, {})
    # Always the image: a broken image in someone's mail helps nobody.
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


async def click(token: str, request: Request) -> Response:
    found = _links(request).read_click(token)
    if found is None:
        return not_found()
    ref, url = found
    _engagement(
        request.app.state.ctx, ref, "email.clicked", request, {"url": url, "link_id": link_id(url)}
    )
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


# HEAD is what link pre-fetchers and scanners send: answered like GET (and recorded as a
# machine open/click), kept out of the OpenAPI document.
for _path, _endpoint, _reason in (
    ("/t/o/{token}", open_pixel, "open pixel; the signed token is the credential"),
    ("/t/c/{token}", click, "click redirect; only to the URL signed into the token"),
):
    router.add_api_route(
        _path, _endpoint, methods=["GET"], route_class_override=EngagementRoute, **public(_reason)
    )
    router.add_api_route(
        _path,
        _endpoint,
        methods=["HEAD"],
        include_in_schema=False,
        operation_id=f"{_endpoint.__name__}_head",
        route_class_override=EngagementRoute,
        **public(_reason + " (HEAD)"),
    )


async def _target(
    request: Request, purpose: str, token: str, session: Session, ctx: Ctx
) -> tuple[DeliveryRef, LinkService] | None:
    ref = _links(request).read(purpose, token)
    if ref is None:
        return None
    return ref, LinkService(session, ref, ctx.clock.now())


@router.get("/u/{token}", **public("unsubscribe page; GET never unsubscribes"))
async def unsubscribe_page(token: str, request: Request, session: Session, ctx: Ctx) -> Response:
    found = await _target(request, "unsubscribe", token, session, ctx)
    if found is None:
        return not_found()
    ref, service = found
    target = await service.target()
    if target is None:
        return page("unsubscribe.html", title="Unsubscribe", state="gone")
    return page(
        "unsubscribe.html",
        title="Unsubscribe",
        state="confirm",
        email=target.contact.email,
        lists=[item.name for item in target.lists],
        manage_url=_links(request).manage_url(ref),
    )


@router.post("/u/{token}", **public("unsubscribe (RFC 8058 one-click or the page's form)"))
async def unsubscribe(token: str, request: Request, session: Session, ctx: Ctx) -> Response:
    found = await _target(request, "unsubscribe", token, session, ctx)
    if found is None:
        return not_found()
    ref, service = found
    form = await request.form()
    one_click = form.get("List-Unsubscribe") == "One-Click"
    action = str(form.get("action") or "unsubscribe")
    target = await service.target()
    if one_click:
        # RFC 8058: the mailbox provider POSTs with no cookies and wants a plain 2xx.
        if target is not None:
            await service.unsubscribe(target, method="one-click")
        return PlainTextResponse("unsubscribed\n", headers=NO_STORE)
    if target is None:
        return page("unsubscribe.html", title="Unsubscribe", state="gone")
    if action == "resubscribe":
        await service.resubscribe(target)
        state = "resubscribed"
    else:
        await service.unsubscribe(target, method="page")
        state = "done"
    return page(
        "unsubscribe.html",
        title="Unsubscribe",
        state=state,
        email=target.contact.email,
        lists=[item.name for item in target.lists],
        manage_url=_links(request).manage_url(ref),
    )


async def _preferences(service: LinkService, target: Any, saved: bool) -> HTMLResponse:
    prefs = await service.preferences(target)
    return page(
        "preferences.html",
        title="Email preferences",
        email=target.contact.email,
        lists=[{"id": item.id, "name": item.name, "subscribed": on} for item, on in prefs],
        saved=saved,
        all_unsubscribed=target.contact.status == "unsubscribed",
    )


@router.get("/p/{token}", **public("preferences page; the signed token is the credential"))
async def preferences_page(token: str, request: Request, session: Session, ctx: Ctx) -> Response:
    found = await _target(request, "preferences", token, session, ctx)
    if found is None:
        return not_found()
    _ref, service = found
    target = await service.target()
    if target is None:
        return page("preferences.html", title="Email preferences", email=None)
    return await _preferences(service, target, saved=False)


@router.post("/p/{token}", **public("saves preferences; the signed token is the credential"))
async def save_preferences(token: str, request: Request, session: Session, ctx: Ctx) -> Response:
    found = await _target(request, "preferences", token, session, ctx)
    if found is None:
        return not_found()
    _ref, service = found
    target = await service.target()
    if target is None:
        return page("preferences.html", title="Email preferences", email=None)
    form = await request.form()
    if form.get("action") == "unsubscribe_all":
        from postroom.contacts.service import ContactService

        if target.contact.status == "subscribed":
            await ContactService(
                session, target.contact.workspace_id, ctx.clock.now()
            ).unsubscribe_everything(target.contact, source="preferences")
            await session.refresh(target.contact)
    else:
        wanted = set()
        for value in form.getlist("list"):
            try:
                wanted.add(uuid.UUID(str(value)))
            except ValueError:
                continue
        await service.save_preferences(target, wanted)
    return await _preferences(service, target, saved=True)


@router.get("/v/{token}", **public("the message as a web page; the signed token is the credential"))
async def view_in_browser(token: str, request: Request, session: Session, ctx: Ctx) -> Response:
    from postroom.delivery.compose import Composer, compiled_for, load_versions

    found = await _target(request, "view", token, session, ctx)
    if found is None:
        return not_found()
    ref, service = found
    target = await service.target()
    if target is None:
        return not_found()
    composer = Composer(ctx)
    versions = await load_versions(session, target.send)
    compiled = compiled_for(target.send, target.contact.locale, versions)
    contact = {
        "email": target.contact.email,
        "first_name": target.contact.first_name,
        "last_name": target.contact.last_name,
        "attributes": target.contact.attributes,
        "locale": target.contact.locale,
    }
    rendered = composer.render(
        target.send, compiled, ref, contact, target.delivery.variables, tracking=False
    )
    body = rendered.html or f"<pre>{html.escape(rendered.text or '')}</pre>"
    return HTMLResponse(body, headers=NO_STORE)
