"""Click-tracking link rewriting and the open pixel."""

from __future__ import annotations

import time

import pytest

from postroom.tracking.links import (
    insert_open_pixel,
    is_trackable,
    link_id,
    open_pixel_html,
    rewrite_links,
)


def click_url(url: str) -> str:
    return f"https://t.example.com/c/{link_id(url)}"


def rewritten(html: str) -> str:
    return rewrite_links(html, click_url)


@pytest.mark.parametrize(
    "tag",
    [
        '<a href="https://shop.example.com/x">',
        "<a href='https://shop.example.com/x'>",
        "<a href=https://shop.example.com/x>",
        '<A HREF = "https://shop.example.com/x">',
        '<area shape="rect" href="https://shop.example.com/x" />',
        '<v:roundrect href="https://shop.example.com/x" arcsize="10%">',
        '<a\nclass="btn"\nhref="https://shop.example.com/x"\ntarget="_blank">',
    ],
)
def test_quote_styles_and_tags_are_rewritten(tag: str) -> None:
    out = rewritten(f"<p>{tag}Shop</a></p>")
    assert f'"{click_url("https://shop.example.com/x")}"' in out
    assert "shop.example.com" not in out


def test_other_attributes_and_text_are_kept() -> None:
    html = (
        '<a class="btn" title="Go &gt; shop" href="https://a.example.com/" '
        'style="color:red" hreflang="en">Go</a>'
    )
    out = rewritten(html)
    assert out == html.replace("https://a.example.com/", click_url("https://a.example.com/"))


def test_href_lookalikes_inside_other_attributes_are_not_touched() -> None:
    html = (
        "<a title=\"href=https://evil.example.com/\" data-x='>' "
        'href="https://good.example.com/">x</a>'
    )
    out = rewritten(html)
    assert 'title="href=https://evil.example.com/"' in out
    assert f'href="{click_url("https://good.example.com/")}"' in out


@pytest.mark.parametrize(
    "href",
    [
        "mailto:someone@example.com",
        "MAILTO:someone@example.com",
        "tel:+15551234567",
        "sms:+15551234567",
        "#section-2",
        "javascript:alert(1)",
        "java\tscript:alert(1)",
        " JavaScript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "",
        "/relative/path",
        "https://example.com/{{ contact.id }}",
        "https://example.com/?id=*|UNIQID|*",
        "https://example.com/{% if x %}",
    ],
)
def test_untrackable_links_are_left_alone(href: str) -> None:
    seen: list[str] = []

    def record(url: str) -> str:
        seen.append(url)
        return "https://t.example.com/c/x"

    html = f'<a href="{href}">x</a>'
    assert rewrite_links(html, record) == html
    assert seen == []


def test_skip_predicate_keeps_our_own_links() -> None:
    html = (
        '<a href="https://t.example.com/u/TOKEN">Unsubscribe</a>'
        '<a href="https://shop.example.com/">Shop</a>'
    )
    out = rewrite_links(html, click_url, skip=lambda url: url.startswith("https://t.example.com/"))
    assert '<a href="https://t.example.com/u/TOKEN">' in out
    assert click_url("https://shop.example.com/") in out


def test_entities_are_decoded_for_the_callback_and_the_result_is_escaped() -> None:
    seen: list[str] = []

    def record(url: str) -> str:
        seen.append(url)
        return 'https://t.example.com/c/1?a=1&b="2"'

    out = rewrite_links('<a href="https://x.example.com/?a=1&amp;b=2&#38;c=3&quot;">x</a>', record)
    assert seen == ['https://x.example.com/?a=1&b=2&c=3"']
    assert out == '<a href="https://t.example.com/c/1?a=1&amp;b=&quot;2&quot;">x</a>'


def test_similar_tag_names_are_not_links() -> None:
    html = '<abbr href="https://x.example.com/">x</abbr><address href="https://x.example.com/">'
    assert rewritten(html) == html


def test_link_ids_are_short_stable_and_distinct() -> None:
    first = link_id("https://example.com/a")
    assert first == link_id("https://example.com/a")
    assert len(first) == 12
    assert int(first, 16) >= 0
    assert first != link_id("https://example.com/b")


def test_is_trackable() -> None:
    assert is_trackable("https://example.com/")
    assert is_trackable("HTTP://example.com/")
    assert not is_trackable("ftp://example.com/")


def test_open_pixel_goes_before_the_last_closing_body() -> None:
    pixel_url = 'https://t.example.com/o/T?x=1&y="2"'
    pixel = open_pixel_html(pixel_url)
    assert 'src="https://t.example.com/o/T?x=1&amp;y=&quot;2&quot;"' in pixel
    html = "<html><body><p>Hi</p><!-- </body> --></BODY></html>"
    assert insert_open_pixel(html, pixel_url) == html.replace("</BODY>", pixel + "</BODY>")
    mixed = "<p>Hi</p></Body>"
    assert insert_open_pixel(mixed, pixel_url) == "<p>Hi</p>" + pixel + "</Body>"
    assert insert_open_pixel("<p>No body tag</p>", pixel_url) == "<p>No body tag</p>" + pixel


def test_malformed_tags_do_not_backtrack() -> None:
    hostile = "<a " + 'x="1" ' * 20_000 + "y"  # no closing ">" and no href
    started = time.perf_counter()
    assert rewritten(hostile) == hostile
    assert time.perf_counter() - started < 1.0


def test_realistic_message_is_rewritten_in_full() -> None:
    links = "".join(
        f'<tr><td><a href="https://shop.example.com/p/{i}?utm_source=news&amp;utm_medium=email"'
        f' style="color:#06c">Item {i}</a></td></tr>'
        for i in range(20)
    )
    html = f"<html><body><table>{links}</table></body></html>"
    out = rewritten(html)
    assert out.count("https://t.example.com/c/") == 20
    assert "shop.example.com" not in out
