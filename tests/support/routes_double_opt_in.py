"""Route classification cases of double opt-in (the confirmation page, resend, a list's
confirmation mail)."""

from __future__ import annotations

from tests.support.routes import PATH_FACTORIES, ROUTES, RouteCase

_RESEND = "/v1/lists/{list_id}/subscriptions/{contact_id}/resend-confirmation"

ROUTES.update(
    {
        ("GET", "/c/{token}"): RouteCase(
            "public", reason="double opt-in confirmation page; signed token, GET changes nothing"
        ),
        ("POST", "/c/{token}"): RouteCase(
            "public", reason="confirms a double opt-in subscription; signed token"
        ),
        ("POST", _RESEND): RouteCase("by_id"),
        ("GET", "/v1/lists/{list_id}/confirmation"): RouteCase("by_id"),
        ("PUT", "/v1/lists/{list_id}/confirmation"): RouteCase(
            "by_id", body={"subject": "Confirm {{ list_name }}", "text": "{{ confirm_url }}"}
        ),
    }
)

__all__ = ["PATH_FACTORIES", "ROUTES"]
