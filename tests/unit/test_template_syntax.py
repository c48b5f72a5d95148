"""Save-time checks: syntax errors with line and column, and unknown-variable warnings."""

from __future__ import annotations

import pytest

from postroom.templates.rendering import (
    TemplateError,
    TemplateProblem,
    TemplateWarning,
    check_syntax,
)


def html_error(html: str) -> TemplateError:
    with pytest.raises(TemplateProblem) as caught:
        check_syntax(subject="s", html=html, text=None, preheader=None)
    assert len(caught.value.errors) == 1
    return caught.value.errors[0]


def warnings_for(html: str, declared: tuple[str, ...] = ()) -> list[TemplateWarning]:
    return check_syntax(subject="s", html=html, text=None, preheader=None, declared=declared)


class TestSyntaxErrors:
    def test_unclosed_print_tag_points_at_its_opening(self) -> None:
        error = html_error("<p>Hi</p>\n<p>Hello {{ contact.first_name </p>\n<p>bye</p>\n")
        assert (error.field, error.line, error.column, error.code) == (
            "html",
            2,
            10,
            "unclosed_tag",
        )
        assert "'{{' is never closed" in error.message

    def test_unclosed_print_tag_at_the_end(self) -> None:
        error = html_error("line one\n  {{ name")
        assert (error.line, error.column, error.code) == (2, 3, "unclosed_tag")

    def test_unknown_tag_points_at_its_name(self) -> None:
        error = html_error("<p>\n  {% frobnicate x %}\n</p>")
        assert (error.line, error.column, error.code) == (2, 6, "unknown_tag")
        assert "frobnicate" in error.message

    def test_unclosed_block_points_at_its_opening_tag(self) -> None:
        source = (
            "<ul>\n{% for item in items %}\n  {% if item %}<li>{{ item }}</li>{% endif %}\n</ul>\n"
        )
        error = html_error(source)
        assert (error.line, error.column, error.code) == (2, 1, "unclosed_block")
        assert "{% for item in items %}" in error.message

    def test_innermost_unclosed_block_is_reported(self) -> None:
        error = html_error("{% if a %}\n{% for x in y %}{% endfor %}\n  {% if b %}\n{% endif %}")
        assert (error.line, error.column, error.code) == (1, 1, "unclosed_block")

    def test_mismatched_end_tag(self) -> None:
        error = html_error("{% if a %}\nx {% endfor %}")
        assert (error.line, error.column, error.code) == (2, 6, "unknown_tag")

    def test_unexpected_token_points_at_it(self) -> None:
        error = html_error("<p>\n{{ first last }}</p>")
        assert (error.line, error.column, error.code) == (2, 10, "syntax_error")

    def test_unterminated_string(self) -> None:
        error = html_error("ok\n<p>{{ 'abc }}</p>")
        assert (error.line, error.column) == (2, 7)

    def test_unknown_filter_points_at_its_name(self) -> None:
        error = html_error("<p>\n  {{ name | shout }}</p>")
        assert (error.line, error.column, error.code) == (2, 13, "unknown_filter")

    def test_unknown_test(self) -> None:
        error = html_error("{% if x is tuesday %}y{% endif %}")
        assert (error.line, error.column, error.code) == (1, 12, "unknown_test")

    def test_private_attributes_are_refused_at_save(self) -> None:
        error = html_error("<p>\n{{ ''.__class__ }}</p>")
        assert (error.line, error.column, error.code) == (2, 7, "unsafe_attribute")

    @pytest.mark.parametrize(
        "source", ["{% include 'x.html' %}", "{% extends 'base' %}", "{% import 'm' as m %}"]
    )
    def test_loading_other_templates_is_refused(self, source: str) -> None:
        assert html_error(source).code == "unsupported_tag"

    def test_every_field_is_checked_and_named(self) -> None:
        with pytest.raises(TemplateProblem) as caught:
            check_syntax(
                subject="Hi {{ name",
                html="<p>fine</p>",
                text="{% if %}",
                preheader="{% endif %}",
            )
        assert [e.field for e in caught.value.errors] == ["subject", "text", "preheader"]
        assert all(e.line == 1 and e.column is not None for e in caught.value.errors)

    def test_problem_message_lists_positions(self) -> None:
        with pytest.raises(TemplateProblem, match=r"html:1:4: "):
            check_syntax(subject="s", html="ab {{ x", text=None, preheader=None)


class TestWarnings:
    def test_known_names_give_no_warnings(self) -> None:
        source = (
            "{{ contact.first_name }}{{ contact.attributes.plan }}{{ data.plan }}"
            "{{ unsubscribe_url }}{{ unsubscribeUrl }}{{ manage_url }}{{ manageUrl }}"
            "{{ view_in_browser_url }}{{ viewInBrowserUrl }}"
            "{% for i in range(3) %}{{ i }}{{ loop.index }}{% endfor %}"
            "{% set greeting = 'hi' %}{{ greeting }}"
            "{% macro m(x) %}{{ x }}{% endmacro %}{{ m(1) }}"
        )
        assert warnings_for(source) == []

    def test_unknown_variable_with_position(self) -> None:
        warnings = warnings_for("<p>\n  Hello {{ frist_name }}</p>")
        assert warnings == [
            TemplateWarning(
                "html",
                "'frist_name' is not a known variable: it will render as an empty string",
                2,
                12,
                "unknown_variable",
            )
        ]

    def test_declared_variables_are_known(self) -> None:
        assert warnings_for("{{ order_id }}", declared=("order_id",)) == []

    def test_unknown_contact_field(self) -> None:
        warnings = warnings_for("{{ contact.first_name }}\n{{ contact.nickname }}")
        assert [(w.code, w.line, w.column) for w in warnings] == [("unknown_contact_field", 2, 12)]
        assert "contact.nickname" in warnings[0].message

    def test_declared_contact_field_is_known(self) -> None:
        assert warnings_for("{{ contact.nickname }}", declared=("contact.nickname",)) == []

    def test_each_field_reports_its_own_warnings(self) -> None:
        warnings = check_syntax(
            subject="{{ a }}", html="{{ b }}", text="{{ c }}", preheader="{{ data.d }}"
        )
        assert [(w.field, w.message.split("'")[1]) for w in warnings] == [
            ("subject", "a"),
            ("html", "b"),
            ("text", "c"),
        ]


def test_single_underscore_keys_of_message_data_are_allowed() -> None:
    assert (
        check_syntax(subject="s", html="{{ data._id }}{{ data['_id'] }}", text=None, preheader=None)
        == []
    )
