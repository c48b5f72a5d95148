"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from postroom.http.access import public
from postroom.http.deps import Ctx
from postroom.http.routing import ApiRoute

router = APIRouter(route_class=ApiRoute, tags=["health"])


@router.get("/healthz", **public("liveness probe; reveals nothing"))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", **public("readiness probe; reveals only whether the database answers"))
async def readyz(ctx: Ctx) -> JSONResponse:
    try:
        async with ctx.db.read_sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
    return JSONResponse({"status": "ok", "database": ctx.db.dialect})
