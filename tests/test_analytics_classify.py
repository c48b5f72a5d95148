"""Telling machine opens and clicks from people's, at request time (no database)."""

from __future__ import annotations

import pytest

from postroom.analytics.classify import machine_reason

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


@pytest.mark.parametrize(
    ("kind", "agent", "ip", "method", "reason"),
    [
        ("open", "Mozilla/5.0", "203.0.113.9", "GET", "apple_mpp"),
        ("open", IPHONE, "17.58.101.4", "GET", "apple_mpp"),  # Apple's proxy range
        ("click", IPHONE, "17.58.101.4", "GET", None),  # a person at Apple clicking
        ("open", IPHONE, "203.0.113.9", "GET", None),
        ("open", GMAIL_PROXY, "66.249.84.1", "GET", None),  # fetched when opened
        ("click", IPHONE, "203.0.113.9", "HEAD", "head_request"),
        ("click", "", "203.0.113.9", "GET", "no_user_agent"),
        (
            "click",
            "Mozilla/5.0 (compatible; Barracuda Sentinel)",
            None,
            "GET",
            "scanner_user_agent",
        ),
        ("click", "python-requests/2.32", None, "GET", "scanner_user_agent"),
        ("click", "Mozilla/5.0 (compatible; bingbot/2.0)", None, "GET", "scanner_user_agent"),
        ("open", IPHONE, "not-an-ip", "GET", None),
    ],
)
def test_machine_reason(
    kind: str, agent: str, ip: str | None, method: str, reason: str | None
) -> None:
    assert machine_reason(kind, agent, ip, method) == reason
