"""Compiling and rendering email templates: merge tags, context, footer, parts, cache, diff."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

import pytest

from postroom.templates.rendering import (
    CompiledContent,
    RenderedContent,
    RenderLimitExceeded,
    RenderLimits,
    TemplateProblem,
    TemplateRenderFailed,
    UnsafeTemplate,
    build_context,
    clear_compiled_cache,
    compile_content,
    compile_content_cached,
    diff_versions,
    render_content,
)

PAGE = "<html><head></head><body>{}</body></html>"


def context(
    contact: Mapping[str, object] | None = None, variables: Mapping[str, object] | None = None
) -> dict[str, object]:
    return build_context(
        contact=contact,
        variables=variables,
        unsubscribe_url="https://example.test/u/abc",
        manage_url="https://example.test/m/abc",
        view_in_browser_url="https://example.test/v/abc",
    )


def compile_body(
    body: str,
    *,
    kind: str = "transactional",
    subject: str = "Subject",
    text: str | None = None,
    preheader: str | None = None,
) -> CompiledContent:
    return compile_content(
        subject=subject, html=PAGE.format(body), text=text, preheader=preheader, kind=kind
    )


def render_body(
    body: str,
    contact: Mapping[str, object] | None = None,
    variables: Mapping[str, object] | None = None,
    *,
    subject: str = "Subject",
    text: str | None = None,
    preheader: str | None = None,
) -> RenderedContent:
    compiled = compile_body(body, subject=subject, text=text, preheader=preheader)
    return render_content(compiled, context(contact, variables))


def body_of(html: str) -> str:
    match = re.search(r"<body[^>]*>(.*)</body>", html, re.S)
    assert match is not None
    return match.group(1).strip()


ADA = {"email": "ada@example.test", "first_name": "Ada", "attributes": {"plan": "pro"}}


class TestMergeTags:
    def test_contact_fields_attributes_and_data(self) -> None:
        rendered = render_body(
            "<p>{{ contact.first_name }} {{ contact.email }} "
            "{{ contact.attributes.plan }} {{ data.plan }}</p>",
            ADA,
        )
        assert body_of(rendered.html) == "<p>Ada ada@example.test pro pro</p>"

    @pytest.mark.parametrize("first_name", [None, "", "   ", "missing"])
    def test_default_applies_to_missing_null_and_blank_values(self, first_name: str | None) -> None:
        contact: dict[str, object] = {"email": "x@example.test"}
        if first_name != "missing":
            contact["first_name"] = first_name
        rendered = render_body('<p>Hi {{ contact.first_name | default("there") }}</p>', contact)
        assert body_of(rendered.html) == "<p>Hi there</p>"

    def test_default_keeps_a_present_value(self) -> None:
        rendered = render_body('<p>Hi {{ contact.first_name | default("there") }}</p>', ADA)
        assert body_of(rendered.html) == "<p>Hi Ada</p>"

    def test_missing_attribute_chain_takes_the_default(self) -> None:
        rendered = render_body('<p>{{ contact.attributes.missing.deeper | default("x") }}</p>', ADA)
        assert body_of(rendered.html) == "<p>x</p>"

    def test_unknown_variables_and_none_render_empty(self) -> None:
        rendered = render_body(
            "<p>[{{ nothing }}][{{ contact.last_name }}][{{ data.nope.deeper }}]</p>",
            {"last_name": None},
        )
        assert body_of(rendered.html) == "<p>[][][]</p>"

    def test_message_variables_override_attributes_in_data(self) -> None:
        rendered = render_body(
            "<p>{{ data.plan }} {{ contact.attributes.plan }} {{ order_id }}</p>",
            ADA,
            {"plan": "enterprise", "order_id": 42},
        )
        assert body_of(rendered.html) == "<p>enterprise pro 42</p>"

    def test_attributes_are_readable_on_contact_but_fields_win(self) -> None:
        contact = {"first_name": "Ada", "attributes": {"plan": "pro", "first_name": "Nope"}}
        rendered = render_body("<p>{{ contact.plan }} {{ contact.first_name }}</p>", contact)
        assert body_of(rendered.html) == "<p>pro Ada</p>"

    def test_data_key_named_like_a_dict_method_reads_the_data(self) -> None:
        rendered = render_body("<p>{{ data.items }}</p>", None, {"items": "three items"})
        assert body_of(rendered.html) == "<p>three items</p>"

    def test_loops_over_message_data(self) -> None:
        rendered = render_body(
            "<ul>{% for item in items %}<li>{{ loop.index }}. {{ item.name }}</li>{% endfor %}</ul>",
            None,
            {"items": [{"name": "Tea"}, {"name": "Cake"}]},
        )
        assert body_of(rendered.html) == "<ul><li>1. Tea</li><li>2. Cake</li></ul>"

    def test_camel_case_url_aliases(self) -> None:
        rendered = render_body(
            '<a href="{{ unsubscribeUrl }}">u</a><a href="{{ manageUrl }}">m</a>'
            '<a href="{{ viewInBrowserUrl }}">v</a><a href="{{ view_in_browser_url }}">v</a>'
        )
        assert body_of(rendered.html) == (
            '<a href="https://example.test/u/abc">u</a><a href="https://example.test/m/abc">m</a>'
            '<a href="https://example.test/v/abc">v</a><a href="https://example.test/v/abc">v</a>'
        )

    def test_message_variables_cannot_replace_context_names(self) -> None:
        ctx = context(None, {"unsubscribe_url": "https://evil.test", "contact": "x"})
        assert ctx["unsubscribe_url"] == "https://example.test/u/abc"
        assert isinstance(ctx["contact"], dict)


class TestEscaping:
    NAME = '<script>alert("x")</script>'

    def test_contact_data_is_escaped_in_html_only(self) -> None:
        compiled = compile_body(
            "<p>Hi {{ contact.first_name }}</p>",
            subject="For {{ contact.first_name }}",
            text="Hi {{ contact.first_name }}",
            preheader="Hey {{ contact.first_name }}",
        )
        rendered = render_content(compiled, context({"first_name": self.NAME}))
        assert "<script>" not in rendered.html
        assert "Hi &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in rendered.html
        assert rendered.text == f"Hi {self.NAME}"
        assert rendered.subject == f"For {self.NAME}"
        assert rendered.preheader == f"Hey {self.NAME}"

    def test_generated_text_part_is_not_escaped(self) -> None:
        rendered = render_body("<p>Hi {{ contact.first_name }}</p>", {"first_name": self.NAME})
        assert rendered.text == f"Hi {self.NAME}\n"

    def test_subject_cannot_carry_line_breaks(self) -> None:
        rendered = render_body(
            "<p>x</p>",
            {"first_name": "Ada\r\nBcc: victim@example.test"},
            subject="Hello {{ contact.first_name }}",
        )
        assert rendered.subject == "Hello Ada Bcc: victim@example.test"

    def test_literal_braces_written_as_entities_stay_literal(self) -> None:
        rendered = render_body("<p>&#123;&#123; contact.email &#125;&#125;</p>", ADA)
        assert body_of(rendered.html) == "<p>{{ contact.email }}</p>"
        assert rendered.text == "{{ contact.email }}\n"


class TestFooter:
    def test_marketing_without_unsubscribe_link_gets_a_footer_before_body_end(self) -> None:
        compiled = compile_body("<p>Sale</p>", kind="marketing")
        assert compiled.footer_added
        rendered = render_content(compiled, context())
        body = body_of(rendered.html)
        assert body.startswith("<p>Sale</p>")
        assert 'href="https://example.test/u/abc"' in body
        assert 'href="https://example.test/m/abc"' in body
        assert rendered.html.rstrip().endswith("</body></html>")
        assert "[Unsubscribe](https://example.test/u/abc)" in rendered.text

    def test_transactional_gets_no_footer(self) -> None:
        compiled = compile_body("<p>Receipt</p>", kind="transactional")
        assert not compiled.footer_added
        assert "Unsubscribe" not in render_content(compiled, context()).html

    @pytest.mark.parametrize(
        "link",
        [
            '<a href="{{ unsubscribe_url }}">stop</a>',
            '<a href="{{ unsubscribeUrl }}">stop</a>',
            '<a href="{{ manage_url }}">preferences</a>',
            '<a href="{{ manageUrl }}">preferences</a>',
        ],
    )
    def test_marketing_with_its_own_link_keeps_it_alone(self, link: str) -> None:
        compiled = compile_body(f"<p>Sale</p>{link}", kind="marketing")
        assert not compiled.footer_added
        assert "postroom-footer" not in compiled.html_source

    def test_html_without_body_gets_the_footer_appended(self) -> None:
        compiled = compile_content(subject="s", html="<p>Sale</p>", text=None, kind="marketing")
        rendered = render_content(compiled, context())
        assert rendered.html.index("Sale") < rendered.html.index("https://example.test/u/abc")

    def test_given_text_part_gets_a_text_footer_in_marketing(self) -> None:
        compiled = compile_body("<p>Sale</p>", kind="marketing", text="Big sale.")
        rendered = render_content(compiled, context())
        assert rendered.text.startswith("Big sale.\n")
        assert "Unsubscribe: https://example.test/u/abc" in rendered.text

    def test_unknown_kind_is_refused(self) -> None:
        with pytest.raises(ValueError, match="kind"):
            compile_body("<p>x</p>", kind="newsletter")


class TestParts:
    def test_generated_text_part_personalises_per_recipient(self) -> None:
        compiled = compile_body(
            '<h1>Hi {{ contact.first_name | default("there") }}</h1>'
            '<p>Your plan: {{ data.plan }}. <a href="{{ view_in_browser_url }}">View</a></p>'
        )
        assert compiled.text_generated
        first = render_content(compiled, context(ADA)).text
        second = render_content(compiled, context({"attributes": {"plan": "free"}})).text
        assert first == "Hi Ada\n\nYour plan: pro. [View](https://example.test/v/abc)\n"
        assert second == "Hi there\n\nYour plan: free. [View](https://example.test/v/abc)\n"

    def test_text_from_a_table_loop_has_a_line_per_row(self) -> None:
        rendered = render_body(
            "<table>{% for item in items %}<tr><td>{{ item }}</td></tr>{% endfor %}</table>",
            None,
            {"items": ["Tea", "Cake"]},
        )
        assert rendered.text == "Tea\nCake\n"

    def test_given_text_part_is_used_as_written(self) -> None:
        rendered = render_body("<p>x</p>", ADA, text="Dear {{ contact.first_name }},\n\n\n\nbye")
        assert rendered.text == "Dear Ada,\n\n\n\nbye"

    def test_preheader_is_rendered_and_hidden_at_the_top_of_the_body(self) -> None:
        rendered = render_body(
            "<p>Body</p>", ADA, preheader="Just for {{ contact.first_name }} & you"
        )
        assert rendered.preheader == "Just for Ada & you"
        body = body_of(rendered.html)
        assert body.startswith('<div class="postroom-preheader"')
        assert "display:none" in body.split(">", 1)[0]
        assert "Just for Ada &amp; you</div>" in body
        assert "Just for" not in rendered.text

    def test_no_preheader_renders_empty(self) -> None:
        rendered = render_body("<p>Body</p>")
        assert rendered.preheader == ""
        assert "postroom-preheader" not in rendered.html

    def test_compiled_content_renders_concurrently_for_different_recipients(self) -> None:
        compiled = compile_body(
            "<p>{% for i in range(200) %}{{ contact.first_name }}{% endfor %}</p>"
        )
        results: dict[str, str] = {}

        def worker(name: str) -> None:
            for _ in range(20):
                html = render_content(compiled, context({"first_name": name})).html
                results[name] = body_of(html)

        threads = [threading.Thread(target=worker, args=(n,)) for n in ("Ann", "Bob", "Cy")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == {n: f"<p>{n * 200}</p>" for n in ("Ann", "Bob", "Cy")}


class TestRenderErrors:
    def test_calling_an_undefined_value_is_a_render_error_with_its_line(self) -> None:
        compiled = compile_body("<p>ok</p>\n<p>{{ nothing() }}</p>")
        with pytest.raises(TemplateRenderFailed) as caught:
            render_content(compiled, context())
        error = caught.value.errors[0]
        assert (error.field, error.code, error.line) == ("html", "undefined", 2)

    def test_python_errors_become_render_errors(self) -> None:
        compiled = compile_body("<p>{{ 1 // data.zero }}</p>")
        with pytest.raises(TemplateRenderFailed) as caught:
            render_content(compiled, context(None, {"zero": 0}))
        assert caught.value.errors[0].code == "render_error"
        assert "ZeroDivisionError" in caught.value.errors[0].message

    def test_output_limit_is_configurable_and_names_the_field(self) -> None:
        compiled = compile_body("<p>{{ 'x' * 5000 }}</p>")
        assert len(render_content(compiled, context()).html) > 5000
        with pytest.raises(RenderLimitExceeded) as caught:
            render_content(compiled, context(), limits=RenderLimits(max_output_bytes=4000))
        assert caught.value.errors[0].field == "html"
        assert caught.value.errors[0].code == "render_limit"

    def test_output_limit_counts_bytes_not_characters(self) -> None:
        compiled = compile_body("<p>{{ 'é' * 600 }}</p>", text="")
        # About 650 characters but 1250 bytes of UTF-8.
        render_content(compiled, context(), limits=RenderLimits(max_output_bytes=1400))
        with pytest.raises(RenderLimitExceeded):
            render_content(compiled, context(), limits=RenderLimits(max_output_bytes=1000))

    def test_time_limit(self) -> None:
        compiled = compile_body("{% for i in range(90000) %}{{ i }}{% endfor %}")
        with pytest.raises(RenderLimitExceeded, match="longer than"):
            render_content(compiled, context(), limits=RenderLimits(max_render_seconds=0.001))

    def test_template_problem_is_the_common_base(self) -> None:
        compiled = compile_body("<p>{{ 'x' * 10**9 }}</p>")
        with pytest.raises(TemplateProblem):
            render_content(compiled, context())


class TestCache:
    def test_same_inputs_share_one_compiled_content(self) -> None:
        clear_compiled_cache()
        first = compile_content_cached(subject="s", html="<p>{{ data.x }}</p>", text=None)
        second = compile_content_cached(subject="s", html="<p>{{ data.x }}</p>", text=None)
        other = compile_content_cached(subject="s", html="<p>{{ data.y }}</p>", text=None)
        assert first is second
        assert other is not first
        assert first.content_hash == second.content_hash != other.content_hash

    def test_hash_covers_every_input(self) -> None:
        base = {"subject": "s", "html": "<p>x</p>", "text": None, "preheader": None}
        hashes = {
            compile_content(**base).content_hash,  # type: ignore[arg-type]
            compile_content(**{**base, "text": ""}).content_hash,  # type: ignore[arg-type]
            compile_content(**{**base, "preheader": "p"}).content_hash,  # type: ignore[arg-type]
            compile_content(**base, kind="transactional").content_hash,  # type: ignore[arg-type]
        }
        assert len(hashes) == 4


class TestBuildContext:
    def test_shape(self) -> None:
        ctx = context(
            {
                "email": "a@example.test",
                "first_name": "Ada",
                "last_name": "L",
                "attributes": {"plan": "pro"},
            },
            {"coupon": "SAVE", "not an identifier": 1},
        )
        contact = ctx["contact"]
        assert isinstance(contact, dict)
        assert contact["full_name"] == "Ada L"
        assert contact["attributes"] == {"plan": "pro"}
        assert ctx["data"] == {"plan": "pro", "coupon": "SAVE", "not an identifier": 1}
        assert ctx["coupon"] == "SAVE"
        assert "not an identifier" not in ctx
        assert ctx["unsubscribeUrl"] == ctx["unsubscribe_url"] == "https://example.test/u/abc"
        assert ctx["manageUrl"] == ctx["manage_url"]
        assert ctx["viewInBrowserUrl"] == ctx["view_in_browser_url"]

    def test_without_contact(self) -> None:
        ctx = context(None, None)
        assert ctx["contact"] == {"attributes": {}, "full_name": None}
        assert ctx["data"] == {}


class TestDiff:
    def test_unified_diff_per_field(self) -> None:
        diffs = diff_versions(
            {"subject": "Hello", "html": "<p>a</p>\n<p>b</p>", "text": None},
            {"subject": "Hello", "html": "<p>a</p>\n<p>c</p>\n<p>d</p>", "text": "new"},
        )
        by_field = {d.field: d for d in diffs}
        assert [d.field for d in diffs] == ["subject", "html", "text"]
        assert not by_field["subject"].changed
        assert by_field["subject"].diff == ""
        html = by_field["html"]
        assert html.changed
        assert (html.added_lines, html.removed_lines) == (2, 1)
        assert html.diff.splitlines()[:2] == ["--- a/html", "+++ b/html"]
        assert "-<p>b</p>" in html.diff.splitlines()
        assert "+<p>d</p>" in html.diff.splitlines()
        assert by_field["text"].changed
        assert by_field["text"].added_lines == 1

    def test_fields_present_on_one_side_only(self) -> None:
        diffs = diff_versions({"mjml": "<mjml/>"}, {"preheader": "hi"})
        assert [(d.field, d.removed_lines, d.added_lines) for d in diffs] == [
            ("mjml", 1, 0),
            ("preheader", 0, 1),
        ]


def test_single_underscore_data_keys_render_but_object_internals_do_not() -> None:
    rendered = render_body("<p>{{ data._id }} {{ data['_id'] }}</p>", None, {"_id": "A1"})
    assert body_of(rendered.html) == "<p>A1 A1</p>"
    with pytest.raises(UnsafeTemplate):
        render_body("{% for x in [1] %}{{ loop._iterator }}{% endfor %}")
