"""``ApiRoute``: the one place that runs a request's unit of work, in this order:

1. authenticate the key (401) and check the route's declared access (403);
2. resolve path ids in the caller's workspace (404) — before the body is read;
   then refuse a query string or JSON body holding text no database can store (422,
   ``text_guard``);
3. claim the ``Idempotency-Key`` (replay, 409, 422);
4. run FastAPI's handler (body validation 422, the endpoint);
5. commit (only here: services and repositories just flush), storing the idempotent
   response in the same transaction; on any error roll back and release the claim.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from postroom.context import AppContext
from postroom.errors import FieldProblem, ValidationFailed
from postroom.http import idempotency
from postroom.http.access import Access, access_of
from postroom.http.path_ids import resolve_path_ids
from postroom.http.principal import Principal, authenticate, authorize
from postroom.http.text_guard import unstorable_query, unstorable_text

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _is_json(request: Request) -> bool:
    # FastAPI parses a body without a content type as JSON too.
    content_type = request.headers.get("content-type", "").lower()
    return not content_type or "json" in content_type


def _refuse(problem: FieldProblem | None) -> None:
    if problem is not None:
        raise ValidationFailed([problem], f"{problem.field}: {problem.message}")


def _refuse_unstorable_query(request: Request) -> None:
    if "%00" in request.url.query:  # the only way a NUL gets into a query string
        _refuse(unstorable_query(request.query_params.multi_items()))


def app_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


class ApiRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        access = access_of(kwargs.get("openapi_extra"))
        if access is None:
            raise RuntimeError(
                f"route {path} declares no access; use requires(), admin_only(), "
                "workspace_key(), events_key() or public(reason)"
            )
        self.access: Access = access
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        access = self.access
        # Only routes whose body FastAPI parses as JSON (the rest may stream uploads).
        takes_json = self.body_field is not None

        async def run(request: Request) -> Response:
            ctx = app_context(request)
            method = request.method.upper()
            if method in READ_METHODS:
                async with ctx.db.read_sessions() as session:
                    await self._admit(request, ctx, session, access)
                    _refuse_unstorable_query(request)
                    request.state.session = session
                    return await handler(request)

            # Writes: check the caller on a read session first, so that on SQLite no
            # write lock is held while the key's last_used_at or the idempotency claim
            # are written in their own short transactions.
            async with ctx.db.read_sessions() as pre:
                principal = await self._admit(request, ctx, pre, access)
            _refuse_unstorable_query(request)
            if takes_json and _is_json(request):
                _refuse(unstorable_text(await request.body()))
            claim: idempotency.Claim | None = None
            key = request.headers.get("idempotency-key")
            if method == "POST" and key is not None and principal is not None:
                claim = idempotency.Claim(principal.owner, key, method, request.url.path)
                body = await request.body()
                replay = await idempotency.claim(
                    ctx.db,
                    claim,
                    idempotency.fingerprint(method, request.url.path, request.url.query, body),
                    ctx.clock.now(),
                    timedelta(hours=ctx.settings.idempotency_ttl_hours),
                )
                if replay is not None:
                    return replay
            async with ctx.db.sessions() as session:
                request.state.session = session
                try:
                    response = await handler(request)
                    if claim is not None:
                        await idempotency.complete(session, claim, response)
                    await session.commit()
                except BaseException:
                    await session.rollback()
                    if claim is not None:
                        await idempotency.release(ctx.db, claim)
                    raise
                return response

        return run

    @staticmethod
    async def _admit(
        request: Request, ctx: AppContext, session: AsyncSession, access: Access
    ) -> Principal | None:
        """Authenticate (401), authorize (403) and resolve path ids (404)."""
        principal: Principal | None = None
        if access.kind != "public":
            principal = await authenticate(
                session, ctx.db, request.headers.get("authorization"), ctx.clock.now()
            )
            authorize(principal, access)
        request.state.principal = principal
        await resolve_path_ids(session, principal, dict(request.path_params))
        return principal
