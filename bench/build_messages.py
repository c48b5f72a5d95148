"""Render and build personalised campaign messages on one core, as the send worker does.

Per message, exactly what the send worker runs (``Composer.envelope``, then
``build_message``): render subject/HTML/text for one contact, rewrite the 20 links of a
~15 KB template to signed click URLs, insert the open pixel, sign the unsubscribe,
preferences and web-view URLs, derive the VERP return path, and build the bytes, without
and with RSA-2048 DKIM. The baseline runs the same pipeline but builds with the
stdlib (``EmailMessage``, ``set_content`` + ``add_alternative``, ``as_bytes()``).

    python bench/build_messages.py            # 100,000 messages (DKIM 20,000; stdlib 10,000)
    python bench/build_messages.py --quick    # 10,000 (DKIM 2,000; stdlib 1,000), < 1 minute

Rates are messages per second of this process's CPU time (one core), so other work on a
shared machine does not count against them; the wall-clock rate is printed beside them.
The last line is the headline: ``build_messages: N msg/s (xR vs stdlib EmailMessage)``.
"""

# The template keeps the long lines real email HTML has (they exercise QP soft breaks).

from __future__ import annotations

import argparse
import email
import email.policy
import os
import platform
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any, cast

import dkim

from postroom.config import Settings
from postroom.context import AppContext
from postroom.delivery.compose import Composer, compiled_for
from postroom.delivery.dkim import DkimSigner, dkim_dns_record, generate_dkim_keypair
from postroom.delivery.message import OutgoingMessage, build_message
from postroom.models.delivery import Send
from postroom.security.tokens import TokenSigner

TRACKING_BASE = "https://t.example.com"
SECRET = b"bench-secret-" + b"x" * 40
FIRST_NAMES = ["Alice", "Bob", "Zoë", "José", "Łukasz", "Mei", "Ana", "Søren", "Priya", "Tom"]
LAST_NAMES = ["Smith", "Müller", "García", "Nowak", "Li", "Jensen", "O'Brien", "Okafor"]
CITIES = ["Berlin", "Lisboa", "Kraków", "Zürich", "Austin", "", "Tokyo", "Nairobi"]


def template_sources() -> tuple[str, str, str]:
    """(subject, html, text): a ~15 KB table layout with 20 tracked links."""
    products = []
    for number in range(1, 9):
        products.append(
            f"""
<tr><td class="product" style="padding:16px 24px;border-bottom:1px solid #eeeeee">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr>
<td width="120" valign="top"><a href="https://shop.example.com/p/{number}?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=spring"><img src="https://cdn.example.com/img/p{number}.jpg" width="120" height="120" alt="Product {number}" style="display:block;border:0"></a></td>
<td valign="top" style="padding-left:16px;font-family:Helvetica,Arial,sans-serif;font-size:15px;line-height:22px;color:#333333">
<h3 style="margin:0 0 6px;font-size:17px;color:#111111;font-family:Helvetica,Arial,sans-serif;line-height:22px">Spring item №{number} — “limited” edition</h3>
<p style="margin:0 0 6px;font-size:13px;color:#777777">Colours: sand, moss, slate · Sizes XS–XXL · ★★★★★ from {number * 13 + 40} reviews</p>
<p style="margin:0 0 10px">Hand-finished, made to last, and now €{number * 7 + 12} instead of €{number * 9 + 20}. Perfect for {{{{ contact.city or "your city" }}}}. Cut from organic cotton in a small workshop in Porto, washed twice for softness, and shipped in recycled packaging with free returns for 60 days.</p>
<a href="https://shop.example.com/p/{number}/buy?utm_source=newsletter&amp;utm_medium=email" style="color:#0b5fff;font-weight:bold;text-decoration:none">Add to basket →</a>
</td></tr></table></td></tr>"""
        )
    # Tracked links: logo, hero button, 8 products x 2, two social = 20. The view,
    # unsubscribe and mailto links stay as they are.
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Spring sale</title>
<style>body{{margin:0;padding:0}} .product h3{{font-weight:600}} @media (max-width:600px){{.product td{{display:block!important;width:100%!important}}}}</style>
</head><body style="margin:0;padding:0;background:#f4f4f4">
<div style="display:none;max-height:0;overflow:hidden">Up to 40% off, this week only, {{{{ contact.first_name }}}}.</div>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f4f4f4"><tr><td align="center">
<table role="presentation" width="600" cellpadding="0" cellspacing="0" style="background:#ffffff;max-width:600px">
<tr><td style="padding:12px 24px;font-family:Helvetica,Arial,sans-serif;font-size:12px;color:#888888;text-align:right"><a href="{{{{ view_in_browser_url }}}}" style="color:#888888">View in your browser</a></td></tr>
<tr><td style="padding:24px"><a href="https://www.example.com/?utm_source=newsletter"><img src="https://cdn.example.com/logo.png" width="160" alt="Example Shop" style="display:block;border:0"></a></td></tr>
<tr><td style="padding:0 24px 24px;font-family:Helvetica,Arial,sans-serif;font-size:16px;line-height:24px;color:#333333">
<h1 style="margin:0 0 12px;font-size:26px;color:#111111">Hello {{{{ contact.first_name | default("there") }}}} — spring is here!</h1>
<p style="margin:0 0 16px">Our biggest sale of the season starts today. {{% if contact.vip %}}As a VIP you get an extra 10% with code <strong>VIP10</strong>.{{% else %}}Sign up for VIP and save even more.{{% endif %}}</p>
<table role="presentation" cellpadding="0" cellspacing="0"><tr><td style="border-radius:4px;background:#0b5fff"><a href="https://shop.example.com/sale?utm_source=newsletter&amp;utm_medium=email&amp;utm_content=hero" style="display:inline-block;padding:12px 24px;font-family:Helvetica,Arial,sans-serif;font-size:16px;color:#ffffff;text-decoration:none;font-weight:bold">Shop the sale</a></td></tr></table>
</td></tr>
<tr><td style="padding:0 24px 16px;font-family:Georgia,serif;font-size:16px;line-height:26px;color:#444444">
<h2 style="margin:0 0 10px;font-family:Helvetica,Arial,sans-serif;font-size:20px;color:#111111">From the workshop</h2>
<p style="margin:0 0 14px">Every spring we visit the people who make our clothes. This year we spent a week in Porto with the team that cuts and sews our shirts, and a few days in Guimarães where the yarn is spun. What struck us most was how much care goes into the parts nobody sees: the seams, the labels, the way a collar is pressed before it is folded.</p>
<p style="margin:0 0 14px">That care is why we can offer a two-year guarantee on everything in this email. If something wears out before it should, send it back and we will repair or replace it — no forms, no questions. It is also why we do not run sales very often, so when we do, we like to make them count.</p>
<p style="margin:0">Below are eight pieces our customers loved last season, each with a little more off than usual until Sunday night. Sizes are limited, so if something catches your eye, do not wait too long.</p>
</td></tr>
{"".join(products)}
<tr><td style="padding:24px;font-family:Helvetica,Arial,sans-serif;font-size:13px;line-height:20px;color:#888888;text-align:center">
<a href="https://twitter.example.com/exampleshop">Twitter</a> · <a href="https://instagram.example.com/exampleshop">Instagram</a><br>
Example Shop GmbH · Musterstraße 1 · 10115 Berlin · Registergericht Amtsgericht Charlottenburg HRB 000000 · Geschäftsführung: Erika Mustermann<br>
Prices include VAT. Offers valid while stocks last and until Sunday 23:59 CET. Discounts cannot be combined with other promotions or applied to past orders. Free returns apply within 60 days of delivery in the EU, the UK and Switzerland.<br>
You get this email because you signed up at example.com. <a href="{{{{ unsubscribe_url }}}}" style="color:#888888">Unsubscribe</a> · <a href="mailto:help@example.com">Contact us</a>
</td></tr></table></td></tr></table>
</body></html>
"""
    text = """Hello {{ contact.first_name | default("there") }} — spring is here!

Our biggest sale of the season starts today.
{% if contact.vip %}As a VIP you get an extra 10% with code VIP10.{% endif %}

Shop the sale: https://shop.example.com/sale
Every item is hand-finished, made to last, and up to 40% off this week only.

View in your browser: {{ view_in_browser_url }}
Unsubscribe: {{ unsubscribe_url }}

Example Shop GmbH, Musterstraße 1, 10115 Berlin
"""
    subject = "{{ contact.first_name }}, our spring sale starts now — up to 40% off"
    return subject, html, text


def contacts(count: int) -> list[dict[str, Any]]:
    rng = random.Random(20240506)
    people = []
    for index in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        people.append(
            {
                "first_name": first,
                "last_name": last,
                "email": f"user{index}@example.org",
                "city": rng.choice(CITIES),
                "vip": rng.random() < 0.2,
                # Upstream, the delivery row exists before the message is built.
                "delivery": uuid.UUID(int=rng.getrandbits(128), version=4),
            }
        )
        # What the batch loader hands the composer (``contact_fields``).
        people[-1]["contact"] = {
            "email": people[-1]["email"],
            "first_name": first,
            "last_name": last,
            "attributes": {"city": people[-1]["city"], "vip": people[-1]["vip"]},
        }
    return people


@dataclass(slots=True)
class Stage:
    compose: float = 0.0  # render + tracking (click rewrite, pixel, signed URLs) + headers
    build: float = 0.0
    count: int = 0
    size: int = 0


class _BenchContext:
    """What :class:`Composer` reads from the application context: settings and signers."""

    def __init__(self) -> None:
        self.settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url="sqlite:///:memory:",
            secret_key=SECRET.decode(),
            base_url=TRACKING_BASE,
            bounce_domain="bounces.example.com",
        )
        self.settings.resolve_secrets()
        self._signers: dict[str, TokenSigner] = {}

    def signer(self, purpose: str) -> TokenSigner:
        if purpose not in self._signers:
            self._signers[purpose] = TokenSigner(self.settings.signing_keys, purpose)
        return self._signers[purpose]


def make_send(subject: str, html: str, text: str) -> Send:
    """A transient campaign send with inline content (never written anywhere)."""
    return Send(
        id=uuid.UUID(int=7, version=4),
        workspace_id=uuid.UUID(int=1, version=4),
        kind="campaign",
        state="active",
        priority=100,
        purpose="marketing",
        content={"inline": {"subject": subject, "html": html, "text": text}},
        from_email="news@example.com",
        from_name="Example Shop",
        reply_to="support@example.com",
        track_opens=True,
        track_clicks=True,
        list_ids=["0190a3c2-7f1e-7cc1-8e7e-1a2b3c4d5e6f"],
        campaign_id=None,
        tags=[],
        metadata_={},
    )


def build_stdlib(msg: OutgoingMessage) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = Address(msg.from_name, addr_spec=msg.from_email)
    message["To"] = Address(msg.to_name, addr_spec=msg.to_email)
    message["Reply-To"] = msg.reply_to or ""
    message["Subject"] = msg.subject
    message["Date"] = msg.date
    message["Message-ID"] = f"<{msg.delivery_id}@example.com>"
    message["List-Unsubscribe"] = f"<{msg.list_unsubscribe_url}>, <{msg.list_unsubscribe_mailto}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["List-Id"] = msg.list_id or ""
    message["Feedback-ID"] = msg.feedback_id or ""
    message["X-Postroom-Delivery"] = msg.delivery_id
    message.set_content(msg.text or "")
    message.add_alternative(msg.html or "", subtype="html")
    return message.as_bytes()


def run(
    people: list[dict[str, Any]],
    composer: Composer,
    send: Send,
    build: Callable[[OutgoingMessage], bytes],
    sent_at: datetime,
) -> tuple[Stage, bytes]:
    """The engine's per-delivery path: ``Composer.envelope`` (render, tracking, headers,
    VERP) then the builder."""
    compiled = compiled_for(send, None)
    stage = Stage()
    last = b""
    clock = time.process_time
    for index, person in enumerate(people):
        started = clock()
        composed = composer.envelope(
            send,
            compiled,
            delivery_id=person["delivery"],
            email=person["email"],
            contact=person["contact"],
            contact_id=None,
            variables=None,
            now=sent_at + timedelta(microseconds=250 * index),
        )
        composed_at = clock()
        last = build(composed.message)
        finished = clock()
        stage.compose += composed_at - started
        stage.build += finished - composed_at
        stage.count += 1
        stage.size += len(last)
    return stage, last


def timed(
    label: str,
    people: list[dict[str, Any]],
    composer: Composer,
    send: Send,
    build: Callable[[OutgoingMessage], bytes],
    sent_at: datetime,
) -> tuple[float, Stage, bytes]:
    run(people[:200], composer, send, build, sent_at)  # warm caches and compiled patterns
    started, wall_started = time.process_time(), time.perf_counter()
    stage, last = run(people, composer, send, build, sent_at)
    elapsed, wall = time.process_time() - started, time.perf_counter() - wall_started
    rate = stage.count / elapsed
    micro = 1e6 / stage.count
    print(
        f"{label}: {rate:,.0f} msg/s over {stage.count:,} messages "
        f"({stage.count / wall:,.0f}/s wall clock; per message: compose (render + "
        f"tracking + headers) {stage.compose * micro:.0f} us, build "
        f"{stage.build * micro:.0f} us; {stage.size / stage.count / 1024:.1f} KB)"
    )
    return rate, stage, last


def render_only(people: list[dict[str, Any]], composer: Composer, send: Send) -> float:
    """Microseconds per message for the Jinja render alone (no tracking, no headers)."""
    compiled = compiled_for(send, None)
    started = time.process_time()
    for person in people:
        ref = composer.ref(send, person["delivery"], None)
        composer.render(send, compiled, ref, person["contact"], None, tracking=False)
    return (time.process_time() - started) * 1e6 / len(people)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, under a minute")
    parser.add_argument("--count", type=int, help="messages without DKIM")
    parser.add_argument("--dkim-count", type=int, help="messages with DKIM")
    parser.add_argument("--baseline-count", type=int, help="messages through EmailMessage")
    args = parser.parse_args()
    count = args.count or (10_000 if args.quick else 100_000)
    dkim_count = args.dkim_count or (2_000 if args.quick else 20_000)
    baseline_count = args.baseline_count or (1_000 if args.quick else 10_000)

    subject, html, text = template_sources()
    composer = Composer(cast(AppContext, _BenchContext()))
    send = make_send(subject, html, text)
    private_pem, public_b64 = generate_dkim_keypair(2048)
    signer = DkimSigner("example.com", "bench", private_pem)
    people = contacts(max(count, dkim_count, baseline_count))
    sent_at = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    print("pipeline: postroom.delivery.compose.Composer.envelope + message.build_message")
    print(
        f"template: {len(html.encode()) / 1024:.1f} KB HTML source, "
        f"{html.count('href=') - 3} tracked links; one process, one core"
    )

    ours, our_stage, sample = timed(
        "postroom builder", people[:count], composer, send, build_message, sent_at
    )
    parsed = email.message_from_bytes(sample, policy=email.policy.default)
    assert parsed.get_body(("html",)) is not None and parsed["List-Unsubscribe-Post"]
    html_part = parsed.get_body(("html",))
    assert html_part is not None and html_part.get_content().count("/t/c/") == 20
    print(f"of which the Jinja render alone: {render_only(people[:2000], composer, send):.0f} us")

    def build_signed(msg: OutgoingMessage) -> bytes:
        return build_message(msg, signer)

    signed, _, signed_sample = timed(
        "postroom builder + DKIM rsa-2048",
        people[:dkim_count],
        composer,
        send,
        build_signed,
        sent_at,
    )
    record = dkim_dns_record(public_b64).encode()
    assert dkim.verify(signed_sample, dnsfunc=lambda name, timeout=5: record), "DKIM fails"

    baseline, base_stage, _ = timed(
        "stdlib EmailMessage", people[:baseline_count], composer, send, build_stdlib, sent_at
    )
    print(f"dkim: verified a sample with dkimpy; build_messages_dkim: {signed:.0f} msg/s")
    our_build = our_stage.build * 1e6 / our_stage.count
    base_build = base_stage.build * 1e6 / base_stage.count
    print(
        f"build step alone: postroom {our_build:.0f} us vs EmailMessage {base_build:.0f} us "
        f"per message (x{base_build / our_build:.1f})"
    )
    print(f"build_messages: {ours:.0f} msg/s (x{ours / baseline:.1f} vs stdlib EmailMessage)")


if __name__ == "__main__":
    main()
