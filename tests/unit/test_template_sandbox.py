"""The template sandbox: escape payloads are refused, resource bombs fail fast and small."""

from __future__ import annotations

import resource
import time

import pytest
from jinja2.exceptions import SecurityError

from postroom.templates.limits import LimitHit, budget_scope
from postroom.templates.rendering import (
    RenderLimitExceeded,
    TemplateProblem,
    TemplateRenderFailed,
    UnsafeTemplate,
    build_context,
    compile_content,
    render_content,
)
from postroom.templates.sandbox import (
    HTML_ENVIRONMENT,
    TEXT_ENVIRONMENT,
    render_limited,
)

CONTEXT = build_context(
    contact={"first_name": "Ada", "attributes": {"plan": "pro"}},
    variables={"big": "x" * 1_000_000},
    unsubscribe_url="https://example.test/u",
    manage_url="https://example.test/m",
    view_in_browser_url="https://example.test/v",
)


def render_html(body: str) -> str:
    """Compile (with the save-time checks) and render, as sending does."""
    compiled = compile_content(subject="s", html=body, text="", kind="transactional")
    return render_content(compiled, CONTEXT).html


def render_in_sandbox(source: str) -> str:
    """Render straight in the sandbox, without the save-time checks in front of it."""
    with budget_scope() as budget:
        return render_limited(HTML_ENVIRONMENT.from_string(source), CONTEXT, budget)


# Each reaches for Python internals; written literally, the save-time check refuses them
# too, so they are also run straight in the sandbox.
ESCAPE_PAYLOADS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__dict__ }}",
    "{{ ''['__class__'] }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ range.__globals__ }}",
    "{{ contact.__class__.__init__ }}",
    "{{ nothing.__class__.__base__ }}",
    "{{ data.items.__self__ }}",
]
# Built at run time, so only the sandbox can stop them.
DYNAMIC_PAYLOADS = [
    "{{ '{0.__class__}'.format('') }}",
    "{{ '{a.__class__.__mro__}'.format_map({'a': ''}) }}",
    "{% set n = '__cla' ~ 'ss__' %}{{ ''|attr(n) }}",
    "{% set n = '__cla' ~ 'ss__' %}{{ ''[n] }}",
    "{{ ['__class__']|map('attr', '__class__')|list }}",
    "{{ [contact]|map(attribute='__class__')|list }}",
    "{{ dict.mro() }}",
    "{{ [].append(1) }}",
    "{{ {}.update(a=1) }}",
    "{{ contact.attributes.clear() }}",
]


class TestSandboxEscapes:
    @pytest.mark.parametrize("payload", ESCAPE_PAYLOADS)
    def test_refused_at_save(self, payload: str) -> None:
        with pytest.raises(TemplateProblem) as caught:
            render_html(payload)
        assert caught.value.errors[0].code == "unsafe_attribute"

    @pytest.mark.parametrize("payload", ESCAPE_PAYLOADS + DYNAMIC_PAYLOADS)
    def test_refused_by_the_sandbox(self, payload: str) -> None:
        with pytest.raises(SecurityError):
            render_in_sandbox(payload)

    @pytest.mark.parametrize("payload", DYNAMIC_PAYLOADS)
    def test_refused_at_send_as_a_domain_error(self, payload: str) -> None:
        with pytest.raises(UnsafeTemplate) as caught:
            render_html(payload)
        assert caught.value.errors[0].code == "security"

    @pytest.mark.parametrize(
        "payload",
        ["{{ config }}", "{{ request }}", "{{ request.application }}", "{{ settings.SECRET_KEY }}"],
    )
    def test_server_objects_are_not_there(self, payload: str) -> None:
        assert render_html(payload) == "<html><head></head><body></body></html>"

    def test_calling_a_missing_object_fails_cleanly(self) -> None:
        with pytest.raises(TemplateRenderFailed):
            render_html("{{ config.items() }}")

    def test_self_renders_nothing_sensitive(self) -> None:
        assert "TemplateReference" in render_in_sandbox("{{ self }}")


# name, template: each would allocate gigabytes or run for minutes without the limits.
BOMBS = [
    ("repeat string", "{{ 'x' * 10**9 }}"),
    ("repeat string literal", "{{ 'x' * 999999999 }}"),
    ("repeat reversed", "{{ 999999999 * 'x' }}"),
    ("repeat list", "{{ [1, 2] * 999999999 }}"),
    (
        "nested loops with output",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    ),
    (
        "nested loops without output",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    ),
    (
        "loop over a list",
        "{% set r = range(100000)|list %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
    ),
    ("power", "{{ 9**(9**9) }}"),
    ("power chain", "{{ 99**99**99 }}"),
    ("big multiplication", "{% set n = 2**8000 %}{{ n * n * n }}"),
    ("float overflow", "{{ 1.5 ** 100000 }}"),
    ("big join", "{{ range(100000)|join('x' * 100000) }}"),
    ("join method", "{{ ('x' * 1000000).join(['a'] * 1000) }}"),
    ("printf width", "{{ '%999999999s' % 'x' }}"),
    ("printf precision", "{{ '%.999999999f' % 1.0 }}"),
    ("printf star", "{{ '%*s' % (999999999, 'x') }}"),
    ("printf repeat", "{{ ('%s' * 100) % ((big,) * 100) }}"),
    ("format filter", "{{ '%999999999d'|format(1) }}"),
    ("format method", "{{ '{:>999999999}'.format(1) }}"),
    ("format nested width", "{{ '{:{}}'.format('x', 999999999) }}"),
    ("format repeat", "{{ ('{0}' * 100).format(big) }}"),
    ("lipsum", "{{ lipsum(10000) }}"),
    ("lipsum words", "{{ lipsum(5, max=999999999) }}"),
    ("center filter", "{{ 'x'|center(999999999) }}"),
    ("center method", "{{ 'x'.center(999999999) }}"),
    ("ljust method", "{{ 'x'.ljust(999999999) }}"),
    ("zfill method", "{{ '1'.zfill(999999999) }}"),
    ("expandtabs", "{{ 'a\\tb'.expandtabs(999999999) }}"),
    ("replace amplification", "{{ ('a' * 100000)|replace('a', 'b' * 100000) }}"),
    ("replace method", "{{ ('a' * 100000).replace('a', 'b' * 100000) }}"),
    ("translate", "{{ big.translate({120: big}) }}"),
    ("indent", "{{ big|indent(999999999) }}"),
    ("concat operator", "{{ big ~ big ~ big }}"),
    ("concat in a loop", "{% for i in range(1000) %}{% set s = big ~ i %}{% endfor %}"),
    ("set block", "{% set b %}{{ big }}{{ big }}{{ big }}{% endset %}"),
    ("macro recursion", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"),
    (
        "macro doubling",
        "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% else %}xxxxxxxx{% endif %}{% endmacro %}{{ f(40) }}",
    ),
    (
        "namespace accumulation",
        "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [big ~ i] %}{% endfor %}",
    ),
    (
        "namespace doubling",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    ),
    ("print a huge list", "{{ [big] * 100000 }}"),
    ("string of a huge list", "{{ ([big] * 100000)|string }}"),
    ("tojson of a huge list", "{{ ([big] * 100000)|tojson }}"),
    ("tojson indent", "{{ range(1000)|list|tojson(indent=999999999) }}"),
    ("sort a huge list", "{{ (big|list|sort)|length }}"),
    ("map over a huge list", "{{ big|list|map('upper')|list|length }}"),
    ("batch fill", "{{ [1]|batch(999999999, 'x')|list }}"),
    ("slice", "{{ [1]|slice(999999999)|list }}"),
    ("sum of lists", "{{ ([[big]] * 100000)|sum(start=[])|length }}"),
    ("wordwrap", "{{ big|wordwrap(1) }}"),
    ("output", "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}"),
]


class TestResourceBombs:
    @pytest.mark.parametrize(("name", "source"), BOMBS, ids=[name for name, _ in BOMBS])
    def test_fails_fast_without_allocating_much(self, name: str, source: str) -> None:
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        with pytest.raises(RenderLimitExceeded) as caught:
            render_html(f"<html><body>{source}</body></html>")
        elapsed = time.monotonic() - started
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
        assert elapsed < 1.0, f"{name} took {elapsed:.2f}s"
        assert grown_mb < 200, f"{name} grew the peak memory by {grown_mb:.0f} MB"
        assert caught.value.errors[0].code == "render_limit"
        assert caught.value.errors[0].field == "html"

    def test_limit_error_carries_the_template_line(self) -> None:
        with pytest.raises(RenderLimitExceeded) as caught:
            render_html("<p>ok</p>\n<p>ok</p>\n<p>{{ 'x' * 10**9 }}</p>")
        assert caught.value.errors[0].line == 3

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("{{ 9**9**9 }}", str(9**81)),  # Jinja's ** is left-associative: (9**9)**9
            ("{{ 'ab' * 3 }}", "ababab"),
            ("{{ [1, 2] + [3] }}", "[1, 2, 3]"),
            ("{{ '%05.1f|%s' % (3.14159, 'x') }}", "003.1|x"),
            ("{{ '{:>5}'.format('x') }}", "    x"),
            ("{{ 'a-b'.replace('-', '+') }}", "a+b"),
            ("{{ ', '.join(['a', 'b']) }}", "a, b"),
            ("{{ 'x'|center(5) }}", "  x  "),
            ("{{ range(3)|join(',') }}", "0,1,2"),
            ("{{ 'a' ~ 1 ~ 'b' }}", "a1b"),
            (
                "{% set ns = namespace(n=0) %}{% for i in range(10) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
                "45",
            ),
            ("{{ [3, 1, 2]|sort|map('string')|join }}", "123"),
            ("{{ lipsum(1, html=False, min=5, max=6).split()|length }}", "5"),
        ],
    )
    def test_ordinary_use_is_unaffected(self, source: str, expected: str) -> None:
        with budget_scope() as budget:
            assert render_limited(TEXT_ENVIRONMENT.from_string(source), CONTEXT, budget) == expected

    def test_limits_apply_outside_a_budget_scope(self) -> None:
        with pytest.raises(LimitHit):
            HTML_ENVIRONMENT.from_string("{{ 'x' * 10**9 }}").render()
