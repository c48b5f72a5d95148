"""Which opens and clicks a machine made, decided when the request arrives (no database).

Machine opens and clicks are counted apart from human ones:

- **Apple Mail Privacy Protection** fetches every remote image of a message through
  Apple's proxies soon after delivery, whether or not the person reads it. Its fetches
  send the bare user agent ``Mozilla/5.0`` and come from Apple's own network 17.0.0.0/8
  (Apple's ``mask-api.icloud.com/egress-ip-ranges.csv`` lists the relay egress ranges; MPP
  image fetches are observed from 17/8). Only *opens* are classified by that address range:
  Apple staff clicking a link are people.
- **Security scanners and link pre-fetchers** (Microsoft Safe Links, Proofpoint,
  Mimecast, Barracuda, …) follow links before the person sees the message. They are told
  by their user agent (a product name, or an HTTP library's), by ``HEAD`` requests, by an
  empty user agent (no mail client sends none), and — in the consumer, where the
  delivery's send time is known — by a click within a few seconds of sending, or clicks on
  several different links of one message within the same second.

Gmail's and Yahoo's image proxies fetch when the person opens the message, so their
opens stay human.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

APPLE_PROXY_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)
APPLE_PROXY_USER_AGENT = "Mozilla/5.0"

_SCANNER = re.compile(
    r"bot\b|bot/|crawler|spider|scanner|barracuda|proofpoint|mimecast|messagelabs|"
    r"symantec|trend ?micro|forcepoint|fortinet|fortiguard|sophos|zscaler|ironport|"
    r"safelinks|safe links|urldefense|appriver|hornetsecurity|checkpoint|paloalto|"
    r"python-requests|python-urllib|aiohttp|httpx|curl/|wget|go-http-client|java/|okhttp|"
    r"apache-httpclient|libwww|headlesschrome|phantomjs|slackbot|facebookexternalhit|"
    r"linkedinbot|whatsapp|telegrambot|discordbot",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def _scanner_agent(user_agent: str) -> bool:
    return _SCANNER.search(user_agent) is not None


def _apple_address(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in APPLE_PROXY_NETWORKS)


def machine_reason(kind: str, user_agent: str, ip: str | None, method: str) -> str | None:
    """Why this open (``kind`` ``open``) or click (``click``) is a machine's, or ``None``."""
    if method == "HEAD":
        return "head_request"
    agent = user_agent.strip()
    if not agent:
        return "no_user_agent"
    if kind == "open" and (agent == APPLE_PROXY_USER_AGENT or _apple_address(ip)):
        return "apple_mpp"
    if _scanner_agent(agent):
        return "scanner_user_agent"
    return None
