"""Click tracking on the sending path: the per-send link rewriter and two-part click
tokens (old one-part tokens in mail already sent keep working)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import cast

import pytest

from postroom.context import AppContext
from postroom.security.tokens import TokenSigner
from postroom.tracking.links import LinkRewriter, rewrite_links
from postroom.tracking.tokens import DeliveryRef, TrackingLinks

BASE = "https://t.example.com"
KEY = b"k" * 32
OLD_KEY = b"o" * 32

HTML = """<p><a href="https://shop.example.com/a?x=1&amp;y=2">A</a>
<a href='https://shop.example.com/b'>B</a> <a href=https://shop.example.com/c>C</a>
<a href="mailto:help@example.com">mail</a> <a href="#top">top</a>
<a href="https://t.example.com/u/personal-token">unsubscribe</a>
<area href="https://shop.example.com/a?x=1&amp;y=2"></p>"""


def links(keys: list[bytes] | None = None) -> TrackingLinks:
    signers: dict[str, TokenSigner] = {}

    def signer(purpose: str) -> TokenSigner:
        return signers.setdefault(purpose, TokenSigner(keys or [KEY], purpose))

    ctx = SimpleNamespace(settings=SimpleNamespace(public_base_url=BASE), signer=signer)
    return TrackingLinks(cast(AppContext, ctx))


def ref(send: int = 2, delivery: int = 3, contact: int | None = 4) -> DeliveryRef:
    return DeliveryRef(
        uuid.UUID(int=1),
        uuid.UUID(int=send),
        uuid.UUID(int=delivery),
        None if contact is None else uuid.UUID(int=contact),
    )


def own(url: str) -> bool:
    return url.startswith(f"{BASE}/u/")


def test_the_rewriter_gives_what_rewrite_links_gives() -> None:
    def part(url: str) -> str:
        return "P" + str(abs(hash(url)))

    expected = rewrite_links(HTML, lambda url: "https://t/c/M." + part(url), skip=own)
    assert LinkRewriter(part, skip=own).rewrite(HTML, "https://t/c/M.") == expected
    assert expected.count("https://t/c/M.") == 4  # a, b, c and the area; not the rest


def test_each_distinct_link_is_signed_once_per_send() -> None:
    calls: list[str] = []

    def part(url: str) -> str:
        calls.append(url)
        return f"L{len(calls)}"

    rewriter = LinkRewriter(part, skip=own)
    first = rewriter.rewrite(HTML, "https://t/c/first.")
    second = rewriter.rewrite(HTML.replace("personal-token", "another"), "https://t/c/second.")
    assert calls == [
        "https://shop.example.com/a?x=1&y=2",
        "https://shop.example.com/b",
        "https://shop.example.com/c",
    ]
    assert '"https://t/c/first.L1"' in first and '"https://t/c/second.L1"' in second
    assert first.count("L1") == 2  # the <a> and the <area> to the same URL


def test_unsafe_parts_and_prefixes_are_attribute_escaped() -> None:
    rewriter = LinkRewriter(lambda url: 'x"y&z')
    out = rewriter.rewrite('<a href="https://a.example.com/">a</a>', "https://t/c/?a=1&b=<2>.")
    assert out == '<a href="https://t/c/?a=1&amp;b=&lt;2&gt;.x&quot;y&amp;z">a</a>'


def test_the_rewriter_cache_is_bounded() -> None:
    rewriter = LinkRewriter(lambda url: "p", max_entries=5)
    for index in range(40):
        rewriter.rewrite(f'<a href="https://a.example.com/{index}">a</a>', "https://t/c/m.")
        assert len(rewriter._cache) <= 5


def _token(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_two_part_click_tokens_round_trip() -> None:
    tracking = links()
    target = "https://shop.example.com/a?x=1&y=2"
    token = _token(tracking.click_url(ref(), target))
    assert token.count(".") == 3
    assert tracking.read_click(token) == (ref(), target)
    # The link half is the same for every recipient of a send, the message half not.
    other = _token(tracking.click_url(ref(delivery=9), target))
    assert other.split(".")[2:] == token.split(".")[2:]
    assert other.split(".")[:2] != token.split(".")[:2]
    assert tracking.read_click(other) == (ref(delivery=9), target)


def test_a_link_half_from_another_send_is_refused() -> None:
    tracking = links()
    mine = _token(tracking.click_url(ref(send=2), "https://shop.example.com/a"))
    foreign = _token(tracking.click_url(ref(send=5), "https://evil.example.net/"))
    grafted = ".".join(mine.split(".")[:2] + foreign.split(".")[2:])
    assert tracking.read_click(grafted) is None


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_any_altered_half_is_refused(index: int) -> None:
    tracking = links()
    parts = _token(tracking.click_url(ref(), "https://shop.example.com/a")).split(".")
    parts[index] = ("A" if parts[index][0] != "A" else "B") + parts[index][1:]
    assert tracking.read_click(".".join(parts)) is None


def test_other_purposes_cannot_stand_in_for_a_click_half() -> None:
    tracking = links()
    open_token = _token(tracking.open_url(ref()))
    link_half = ".".join(_token(tracking.click_url(ref(), "https://a.example.com/")).split(".")[2:])
    assert tracking.read_click(f"{open_token}.{link_half}") is None


def test_one_part_tokens_from_mail_already_sent_still_verify() -> None:
    # What the builder wrote before two-part tokens: one MAC over ids and URL, with the
    # "click" key (here from a key since rotated into the old keys).
    old = TokenSigner([OLD_KEY], "click").sign(ref().pack() + b"https://shop.example.com/a")
    tracking = links([KEY, OLD_KEY])
    assert tracking.read_click(old) == (ref(), "https://shop.example.com/a")
    assert links([KEY]).read_click(old) is None
    not_http = TokenSigner([KEY], "click").sign(ref().pack() + b"javascript:alert(1)")
    assert tracking.read_click(not_http) is None


def test_a_rotated_key_keeps_two_part_tokens_working() -> None:
    token = _token(links([OLD_KEY]).click_url(ref(), "https://shop.example.com/a"))
    assert links([KEY, OLD_KEY]).read_click(token) == (ref(), "https://shop.example.com/a")
