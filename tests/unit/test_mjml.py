"""MJML to HTML templates (mjml-python), with Jinja tags carried through."""

from __future__ import annotations

import re

import pytest

from postroom.templates.rendering import (
    TemplateProblem,
    build_context,
    compile_content,
    compile_mjml,
    render_content,
)

SOURCE = """<mjml>
  <mj-head><mj-title>News for {{ contact.first_name }}</mj-title></mj-head>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Hello {{ contact.first_name | default("there") }} &amp; welcome</mj-text>
        {% for item in items %}<mj-text>Item: {{ item }}</mj-text>{% endfor %}
        {% if data.plan == "pro" %}<mj-button href="{{ data.upgrade_url }}">Upgrade</mj-button>{% endif %}
        <mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""


def visible_text(html: str) -> list[str]:
    without_head = re.sub(r"<head>.*?</head>", "", html, flags=re.S)
    text = re.sub(r"<!--.*?-->|<[^>]+>", "\n", without_head)
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_jinja_tags_survive_and_render_per_recipient() -> None:
    html = compile_mjml(SOURCE)
    assert html.lstrip().lower().startswith("<!doctype html>")
    for tag in (
        "{{ contact.first_name }}",
        '{{ contact.first_name | default("there") }}',
        "{% for item in items %}",
        "{% endfor %}",
        '{% if data.plan == "pro" %}',
        'href="{{ data.upgrade_url }}"',
        'href="{{ unsubscribe_url }}"',
    ):
        assert tag in html
    compiled = compile_content(subject="News", html=html, text=None, kind="marketing")
    assert not compiled.footer_added  # the MJML has its own unsubscribe link
    rendered = render_content(
        compiled,
        build_context(
            contact={"first_name": "Ada", "attributes": {"plan": "pro"}},
            variables={"items": ["Tea", "Cake"], "upgrade_url": "https://example.test/up"},
            unsubscribe_url="https://example.test/u",
            manage_url="https://example.test/m",
            view_in_browser_url="https://example.test/v",
        ),
    )
    assert "<title>News for Ada</title>" in rendered.html.replace("\n", "").replace("  ", "")
    assert visible_text(rendered.html) == [
        "Hello Ada &amp; welcome",
        "Item: Tea",
        "Item: Cake",
        "Upgrade",
        "Unsubscribe",
    ]
    assert 'href="https://example.test/up"' in rendered.html
    assert rendered.text.startswith("Hello Ada & welcome\nItem: Tea\nItem: Cake\n")


def test_without_the_condition_the_button_is_gone() -> None:
    compiled = compile_content(subject="s", html=compile_mjml(SOURCE), text="", kind="marketing")
    rendered = render_content(
        compiled,
        build_context(
            contact=None,
            variables=None,
            unsubscribe_url="u",
            manage_url="m",
            view_in_browser_url="v",
        ),
    )
    assert visible_text(rendered.html) == ["Hello there &amp; welcome", "Unsubscribe"]


@pytest.mark.parametrize("source", ["<p>not mjml</p>", ""])
def test_invalid_mjml_is_a_template_problem(source: str) -> None:
    with pytest.raises(TemplateProblem) as caught:
        compile_mjml(source)
    assert caught.value.errors[0].field == "mjml"
    assert caught.value.errors[0].code == "mjml_invalid"
