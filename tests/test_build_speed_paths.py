"""The per-send shortcuts of the sending path give what the plain path gives.

Chunk-by-chunk click rewriting against a rewrite of the joined HTML, marked
quoted-printable lines against an encoding of the real text, signed URLs made together
against one by one, constant templates, and the composer end to end: one recipient's
data never shows up in another's message, and links made by merge tags are still
rewritten.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import os
import quopri
import re
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.config import Settings
from postroom.context import AppContext
from postroom.delivery import mime
from postroom.delivery.compose import Composer, compiled_for
from postroom.delivery.message import OutgoingMessage, build_message
from postroom.models.delivery import Send
from postroom.security.tokens import TokenSigner, b64
from postroom.templates.compiling import compile_content
from postroom.templates.limits import budget_scope
from postroom.templates.rendering import RenderLimitExceeded, RenderLimits, render_content
from postroom.templates.sandbox import render_limited, render_limited_parts
from postroom.tracking import links as links_module
from postroom.tracking.links import (
    CLICK_MARK,
    LinkRewriter,
    insert_open_pixel,
    insert_open_pixel_into,
    rewrite_links,
)
from postroom.tracking.tokens import DeliveryRef, TrackingLinks

BASE = "https://t.example.com"

# --- chunk-by-chunk click rewriting ---------------------------------------------------

SNIPPETS = [
    '<a href="https://shop.example.com/a?x=1&amp;y=2">A</a>',
    "<a href='https://shop.example.com/b'>B</a>",
    "<a href=https://shop.example.com/c>C</a>",
    '<A HREF="https://shop.example.com/UP">up</A>',
    '<a class="btn" title="a > b" href="https://shop.example.com/d">D</a>',
    '<a title="<a href=\'https://inner.example.com/\'>" href="https://outer.example.com/">',
    '<a\n  style="color:red"\n  href="https://shop.example.com/multi">M</a>',
    '<area shape="rect" href="https://shop.example.com/area">',
    '<v:roundrect href="https://shop.example.com/vml" arcsize="10%">',
    '<a href="mailto:help@example.com">mail</a>',
    '<a href="https://t.example.com/u/own-token">unsubscribe</a>',
    '<a name="top">anchor</a>',
    "<a>bare</a>",
    "<abbr title='x'>abbr</abbr>",
    '<a href="#top">top</a>',
    '<td style="padding:0">cell</td>',
    "plain text — “quoted” ★ ",
    "a < b and c > d",
    "\n",
    "<",
    "<a ",
    'href="https://shop.example.com/split"',
    ' href = "https://shop.example.com/spaced"',
    '<a title="open',
    "<a title='open",
    '<a x=y"z href="https://shop.example.com/q">',
    '<a href=https://shop.example.com/bare"q>',
    '<a href="https://shop.example.com/it\'s">',
    "=",
    '"',
    "'",
    ">",
    " ",
    "</body>",
    "</BODY>",
    "</Body>",
]


def _part(url: str) -> str:
    return "P" + str(abs(hash(url)))


def _own(url: str) -> bool:
    return url.startswith(f"{BASE}/u/")


@settings(
    max_examples=int(os.environ.get("BUILD_SPEED_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(st.sampled_from(SNIPPETS), min_size=1, max_size=14),
    st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_rewriting_chunk_by_chunk_equals_rewriting_the_joined_html(
    pieces: list[str], cuts: list[int]
) -> None:
    html = "".join(pieces)
    points = sorted({cut % (len(html) + 1) for cut in cuts} | {0, len(html)})
    parts = [html[a:b] for a, b in itertools.pairwise(points)]
    rewriter = LinkRewriter(_part, skip=_own)
    expected = rewrite_links(html, lambda url: "MARK:" + _part(url), skip=_own)
    for _ in range(2):  # cold, then from the per-chunk table
        assert rewriter.rewrite_parts(parts, "MARK:") == expected
        assert rewriter.rewrite(html, "MARK:") == expected
        segments = rewriter.rewrite_segments(parts)
        assert "MARK:".join(segments) == expected
        if insert_open_pixel_into(segments, "https://t.example.com/t/o/x"):
            pixelled = insert_open_pixel(expected, "https://t.example.com/t/o/x")
            assert "MARK:".join(segments) == pixelled
        else:
            assert "</body" not in expected and "</BODY" not in expected


def test_the_same_chunks_around_other_values_are_rewritten_for_each_message() -> None:
    rewriter = LinkRewriter(_part, skip=_own)
    head = '<p>Hi <a href="https://shop.example.com/x">shop</a> <a href="'
    tail = '">link</a> bye <a href="https://shop.example.com/y">y</a></p>'
    for value in ("https://dyn.example.com/1", f"{BASE}/u/own", "mailto:a@b.c", "x y"):
        parts = [head, value, tail]
        expected = rewrite_links("".join(parts), lambda url: "M:" + _part(url), skip=_own)
        assert rewriter.rewrite_parts(parts, "M:") == expected


def test_the_chunk_table_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(links_module, "_CHUNK_CHARS_MAX", 2_000)
    rewriter = LinkRewriter(_part, max_entries=50)
    static = '<p><a href="https://shop.example.com/a">a</a></p>'
    for index in range(500):  # values holding markup, never the same twice
        value = f'<b>{index}</b><a href="https://x.example.com/{index}">{"y" * 40}</a>'
        parts = [static, value, static]
        expected = rewrite_links("".join(parts), lambda url: "M:" + _part(url))
        assert rewriter.rewrite_parts(parts, "M:") == expected
        assert len(rewriter._chunks) <= 50
        assert rewriter._chunks_chars <= 2_000 + len(value)


def test_an_unsafe_prefix_is_escaped_once() -> None:
    rewriter = LinkRewriter(_part)
    parts = ['<a href="https://shop.example.com/a">a</a>', " and more"]
    expected = rewrite_links("".join(parts), lambda url: "https://t/c/a&b." + _part(url))
    assert rewriter.rewrite_parts(parts, "https://t/c/a&b.") == expected
    assert "a&amp;b." in expected and "&amp;amp;" not in expected


# --- marked quoted-printable lines -----------------------------------------------------

LINE_POOL = [
    "",
    " ",
    "plain words",
    "trailing space ",
    "=",
    "é",
    "Grüße aus Zürich — “quoted” €5",
    "x" * 75,
    "y" * 73 + "é",
    ".leading dot",
    "%s %d %%",
    "z" * 74 + "=" + "z" * 80,
]
VALUES = [
    "https://t.example.com/t/c/AAAAAAAAQACAAAAAAAAAAw.abcdefghijklmnopqrstuv.",
    "." + "v" * 150 + ".",
    "w" * 74 + "." + "w" * 3,
    "short",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(st.sampled_from([*LINE_POOL, "MARK"]), min_size=1, max_size=4).map("".join),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(VALUES),
)
def test_marked_lines_encode_the_real_text(lines: list[str], value: str) -> None:
    mark = "postroom-click-test:"
    marked_text = "\n".join(lines).replace("MARK", mark)
    marked = mime.Marked.of(marked_text, mark, value)
    real = marked.real
    for _ in range(2):  # cold, then from the tables
        body = mime.quoted_printable(marked_text.encode(), marked)
        assert quopri.decodestring(body.replace(b"\r\n", b"\n")) == real.encode()
        physical = body.split(b"\r\n")
        assert all(len(line) <= 76 for line in physical)
        assert not any(line.startswith(b".") for line in physical)
        assert re.search(rb"[ \t]\r\n|[ \t]\Z", body) is None


def test_encode_text_body_with_marks_decodes_like_without() -> None:
    mark, value = "postroom-click-test:", VALUES[0]
    marked_text = f'<p>Grüße</p>\n<a href="{mark}part">x</a> <a href="{mark}two">y</a>\n'
    marked = mime.Marked.of(marked_text, mark, value)
    real = marked.real
    for boundary in ("=_boundary", None):
        plain_cte, plain_body = mime.encode_text_body(real, boundary)
        cte, body = mime.encode_text_body(real, boundary, marked)
        assert cte == plain_cte == "quoted-printable"
        assert quopri.decodestring(body) == quopri.decodestring(plain_body)
    # A value the marked path cannot hold (an "=") and CR line breaks take the plain path.
    odd = mime.Marked.of(marked_text, mark, "https://t/c/a=b.")
    assert not odd.usable_for(odd.real)
    assert mime.encode_text_body(odd.real, None, odd) == mime.encode_text_body(odd.real, None)
    crlf = mime.Marked.of(marked_text.replace("\n", "\r\n"), mark, value)
    assert mime.encode_text_body(crlf.real, None, crlf) == mime.encode_text_body(crlf.real, None)
    # Marks for another text are not used.
    other = real.replace("Grüße", "Grüße!")
    assert mime.encode_text_body(other, None, marked) == mime.encode_text_body(other, None)


# --- signed URLs, constant templates ----------------------------------------------------


def test_urls_made_together_are_the_urls_made_one_by_one() -> None:
    signers: dict[str, TokenSigner] = {}

    class Ctx:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, database_url="sqlite:///:memory:", secret_key="s" * 40, base_url=BASE
        )

        def signer(self, purpose: str) -> TokenSigner:
            return signers.setdefault(purpose, TokenSigner([b"k" * 32, b"o" * 32], purpose))

    links = TrackingLinks(cast(AppContext, Ctx()))
    ref = DeliveryRef(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), None)
    urls = links.for_message(ref)
    assert urls.open == links.open_url(ref)
    assert urls.click_prefix == links.click_prefix(ref)
    assert urls.unsubscribe == links.unsubscribe_url(ref)
    assert urls.manage == links.manage_url(ref)
    assert urls.view == links.view_url(ref)
    signer = TokenSigner([b"k" * 32], "x")
    assert signer.sign_encoded(b"payload", b64(b"payload")) == signer.sign(b"payload")
    assert signer.verify(signer.sign(b"payload")) == b"payload"


def test_a_constant_template_renders_once_and_still_counts() -> None:
    compiled = compile_content(subject="Fixed subject", html="<p>{{ 1 }}</p>", text=None)
    with budget_scope() as budget:
        assert render_limited(compiled.subject_template, {}, budget) == "Fixed subject"
        assert render_limited_parts(compiled.preheader_template, {}, budget) == [""]
        assert budget.output == len("Fixed subject")
    big = compile_content(subject="x" * 200, html="<p>hi</p>", text="t", kind="transactional")
    with pytest.raises(RenderLimitExceeded):
        render_content(big, {}, limits=RenderLimits(max_output_bytes=100))


# --- the composer end to end ----------------------------------------------------------


class _Context:
    def __init__(self) -> None:
        self.settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url="sqlite:///:memory:",
            secret_key="test-secret-" + "x" * 40,
            base_url=BASE,
            bounce_domain="bounces.example.com",
        )
        self.settings.resolve_secrets()
        self._signers: dict[str, TokenSigner] = {}

    def signer(self, purpose: str) -> TokenSigner:
        if purpose not in self._signers:
            self._signers[purpose] = TokenSigner(self.settings.signing_keys, purpose)
        return self._signers[purpose]


HTML = """<html><body>
<p>Hello {{ contact.first_name }} from {{ contact.city or "nowhere" }} — “hi”</p>
<a href="https://shop.example.com/static?a=1&amp;b=2">static</a> <a
 href="https://shop.example.com/{{ contact.first_name }}">personal</a>
<a href="{{ data.link }}">variable</a> <a href="{{ view_in_browser_url }}">view</a>
{% if contact.vip %}<a href="https://shop.example.com/vip">vip</a>{% endif %}
{{ data.snippet | safe }}
<a href="{{ unsubscribe_url }}">unsubscribe</a>
</body></html>
"""


def _send(html: str = HTML) -> Send:
    return Send(
        id=uuid.uuid4(),
        workspace_id=uuid.uuid4(),
        kind="campaign",
        state="active",
        priority=100,
        purpose="marketing",
        content={"inline": {"subject": "Hi {{ contact.first_name }}", "html": html, "text": None}},
        from_email="news@example.com",
        from_name="Example",
        reply_to=None,
        track_opens=True,
        track_clicks=True,
        list_ids=[],
        campaign_id=None,
        tags=[],
        metadata_={},
    )


def _people() -> list[dict[str, Any]]:
    people = []
    for index, (name, city, vip) in enumerate(
        [("Zoë", "Kraków", True), ("Bob", "", False), ("José", "Lisboa", False)]
    ):
        people.append(
            {
                "delivery": uuid.uuid4(),
                "email": f"user{index}@example.org",
                "contact": {
                    "email": f"user{index}@example.org",
                    "first_name": name,
                    "last_name": "Tester",
                    "attributes": {"city": city, "vip": vip},
                },
                "variables": {
                    "link": f"https://other.example.com/{index}",
                    "snippet": f'<a href="https://snippet.example.com/{index}">s</a>'
                    if index == 2
                    else "",
                },
            }
        )
    return people


def _reference_html(composer: Composer, send: Send, person: dict[str, Any]) -> str:
    """The plain path: render, rewrite the joined HTML link by link, add the pixel."""
    links = composer.links
    ref = composer.ref(send, person["delivery"], None)
    rendered = composer.render(
        send, compiled_for(send, None), ref, person["contact"], person["variables"], tracking=False
    )
    html = rewrite_links(rendered.html, lambda url: links.click_url(ref, url), skip=links.is_own)
    return insert_open_pixel(html, links.open_url(ref))


def _html_of(raw: bytes) -> str:
    parsed = cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))
    part = parsed.get_body(("html",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


@pytest.mark.parametrize(
    "html",
    [
        HTML,
        HTML.replace("</body>", "</Body>"),
        HTML.replace("<html><body>", "").replace("</body></html>", ""),
    ],
    ids=["body", "mixed-case-body", "no-body"],
)
def test_every_message_gets_its_own_data_and_links(html: str) -> None:
    composer = Composer(cast(AppContext, _Context()))
    send = _send(html)
    people = _people()
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    # Interleaved and repeated, so that every per-send table is warm with someone else.
    for person in [*people, *reversed(people), *people]:
        composed = composer.envelope(
            send,
            compiled_for(send, None),
            delivery_id=person["delivery"],
            email=person["email"],
            contact=person["contact"],
            contact_id=None,
            variables=person["variables"],
            now=now,
        )
        message: OutgoingMessage = composed.message
        expected = _reference_html(composer, send, person)
        assert message.html == expected
        assert message.html_marked is not None and message.html_marked.real is message.html
        assert CLICK_MARK not in expected
        assert _html_of(build_message(message)) == expected
        # Every tracked link is this delivery's, and merge-tag links are tracked too.
        clicks = re.findall(rf'href="{BASE}/t/c/([^"]+)"', expected)
        targets = set()
        for token in clicks:
            read = composer.links.read_click(token)
            assert read is not None
            assert read[0].delivery_id == person["delivery"]
            targets.add(read[1])
        name = person["contact"]["first_name"]
        assert f"https://shop.example.com/{name}" in targets
        assert person["variables"]["link"] in targets
        assert ("https://shop.example.com/vip" in targets) == person["contact"]["attributes"]["vip"]
        assert ("https://snippet.example.com/2" in targets) == (person is people[2])
        words = re.sub(r'(?:href|src)="[^"]*"', "", expected)  # tokens could hold "Bob"
        for other in people:
            if other is not person:
                assert other["contact"]["first_name"] not in words
                assert other["variables"]["link"] not in targets


@pytest.mark.parametrize("tail", ["y" * 70 + "é", "y" * 71 + "é", "y" * 69 + "é.", ".y" * 40])
def test_a_top_level_body_without_a_final_newline_keeps_lines_short(tail: str) -> None:
    # The soft break added at the end must fit: a last line of 76 characters is broken.
    for text in (tail, "first line\n" + tail):
        cte, body = mime.encode_text_body(text, None)
        assert cte == "quoted-printable" and body.endswith(b"=\r\n")
        assert all(len(line) <= 76 for line in body.split(b"\r\n"))
        assert not any(line.startswith(b".") for line in body.split(b"\r\n"))
        assert quopri.decodestring(body.replace(b"\r\n", b"\n")) == text.encode()
