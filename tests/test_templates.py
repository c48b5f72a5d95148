"""Templates and their versions over HTTP on both databases: drafts, immutable published
versions, one published version per locale, history, diffs, rollback, previews, MJML,
CSS inlining and the unsubscribe footer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from postroom.context import AppContext
from postroom.errors import ValidationFailed
from postroom.models.templates import TemplateVersion
from postroom.templates.locales import normalize_locale, pick_version
from tests.conftest import WorkspaceHandle
from tests.test_api_keys import assert_problem

STYLED = (
    "<html><head><style>p { color: red; }</style></head>"
    "<body><p>Hello {{ contact.first_name }}</p></body></html>"
)
MJML = (
    "<mjml><mj-body><mj-section><mj-column>"
    "<mj-text>Hello {{ contact.first_name }}</mj-text>"
    "</mj-column></mj-section></mj-body></mjml>"
)


async def _template(
    client: httpx.AsyncClient, ws: WorkspaceHandle, name: str = "Welcome", **extra: Any
) -> dict[str, Any]:
    response = await client.post("/v1/templates", headers=ws.headers, json={"name": name, **extra})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _draft(
    client: httpx.AsyncClient, ws: WorkspaceHandle, template_id: str, **fields: Any
) -> dict[str, Any]:
    body = {"subject": "Hello", "html": "<p>Hi</p>", **fields}
    response = await client.post(
        f"/v1/templates/{template_id}/versions", headers=ws.headers, json=body
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _url(template_id: str, version_id: str | None = None, action: str = "") -> str:
    url = f"/v1/templates/{template_id}/versions"
    if version_id:
        url += f"/{version_id}"
    return url + (f"/{action}" if action else "")


async def _publish(
    client: httpx.AsyncClient, ws: WorkspaceHandle, template_id: str, version_id: str
) -> dict[str, Any]:
    response = await client.post(_url(template_id, version_id, "publish"), headers=ws.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_create_template_and_draft_with_warnings(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    template = await _template(client, workspace, kind="transactional", default_locale="fr_ca")
    assert (template["kind"], template["default_locale"]) == ("transactional", "fr-CA")
    assert template["created_by"] is not None
    assert template["published"] == []
    assert_problem(
        await client.post("/v1/templates", headers=workspace.headers, json={"name": "Welcome"}),
        409,
    )
    for bad in ({"name": "x", "default_locale": "not a locale"}, {"name": "y", "kind": "spam"}):
        assert_problem(await client.post("/v1/templates", headers=workspace.headers, json=bad), 422)

    draft = await _draft(
        client,
        workspace,
        template["id"],
        subject="Hi {{ contact.first_name }}",
        html="<p>{{ plan }} {{ coupon }} {{ contact.nick }}</p>",
        variables=[{"name": "plan", "type": "string", "fallback": "free"}],
    )
    assert (draft["number"], draft["status"], draft["locale"]) == (1, "draft", "fr-CA")
    assert draft["compiled_html"] is None
    warned = {(w["code"], w["field"], w["line"], w["column"]) for w in draft["warnings"]}
    assert warned == {("unknown_variable", "html", 1, 18), ("unknown_contact_field", "html", 1, 39)}
    assert "coupon" in draft["warnings"][0]["message"] + draft["warnings"][1]["message"]

    for bad_body, field in [
        ({"html": "<p>x</p>"}, "subject"),
        ({"subject": "s"}, "html"),
        ({"subject": "s", "html": "x", "locale": "??"}, "locale"),
        (
            {
                "subject": "s",
                "html": "x",
                "variables": [{"name": "n", "type": "number", "fallback": "one"}],
            },
            "variables.0.fallback",
        ),
        ({"subject": "s", "html": "x", "variables": [{"name": "a b"}]}, "variables.0.name"),
    ]:
        body = assert_problem(
            await client.post(_url(template["id"]), headers=workspace.headers, json=bad_body), 422
        )
        assert body["errors"][0]["field"] == field  # type: ignore[index]


async def test_syntax_errors_name_line_and_column_at_save_and_at_publish(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    template = await _template(client, workspace)
    broken = "<p>\n  Hello {{ contact.first_name }\n</p>"
    body = assert_problem(
        await client.post(
            _url(template["id"]), headers=workspace.headers, json={"subject": "s", "html": broken}
        ),
        422,
    )
    assert body["code"] == "template_invalid"
    [error] = body["errors"]  # type: ignore[misc]
    assert (error["field"], error["line"], error["column"], error["code"]) == (
        "html",
        2,
        9,
        "unclosed_tag",
    )
    assert (await client.get(_url(template["id"]), headers=workspace.headers)).json()["data"] == []

    draft = await _draft(client, workspace, template["id"])
    body = assert_problem(
        await client.patch(
            _url(template["id"], draft["id"]),
            headers=workspace.headers,
            json={"subject": "Hi {% if x %}"},
        ),
        422,
    )
    assert body["errors"][0]["field"] == "subject"  # type: ignore[index]
    assert body["errors"][0]["line"] == 1  # type: ignore[index]
    unchanged = (
        await client.get(_url(template["id"], draft["id"]), headers=workspace.headers)
    ).json()
    assert unchanged["subject"] == "Hello"

    # A draft stored before today's checks (written straight to the database) is
    # checked again at publish.
    async with ctx.db.transaction() as session:
        old = TemplateVersion(
            workspace_id=workspace.id,
            template_id=uuid.UUID(template["id"]),
            number=2,
            status="draft",
            locale="en",
            subject="s",
            html="<p>ok</p>\n<p>{% for x in y %}</p>",
            variables=[],
            created_at=ctx.clock.now(),
            updated_at=ctx.clock.now(),
        )
        session.add(old)
    body = assert_problem(
        await client.post(_url(template["id"], str(old.id), "publish"), headers=workspace.headers),
        422,
    )
    [error] = body["errors"]  # type: ignore[misc]
    assert (error["field"], error["line"], error["column"]) == ("html", 2, 4)
    still = (await client.get(_url(template["id"], str(old.id)), headers=workspace.headers)).json()
    assert still["status"] == "draft"


async def test_published_versions_are_immutable_and_edited_through_new_drafts(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    template = await _template(client, workspace)
    first = await _draft(client, workspace, template["id"], subject="One", preheader="Pre")
    published = await _publish(client, workspace, template["id"], first["id"])
    assert published["status"] == "published"
    assert published["published_at"] is not None and published["published_by"] is not None
    body = assert_problem(
        await client.patch(
            _url(template["id"], first["id"]), headers=workspace.headers, json={"subject": "x"}
        ),
        409,
    )
    assert body["current_status"] == "published"
    assert "published" in str(body["detail"])
    assert_problem(
        await client.post(_url(template["id"], first["id"], "publish"), headers=workspace.headers),
        409,
    )

    copy = await _draft(client, workspace, template["id"], from_version=first["id"], subject="Two")
    assert (copy["number"], copy["status"], copy["subject"], copy["preheader"]) == (
        2,
        "draft",
        "Two",
        "Pre",
    )
    edited = await client.patch(
        _url(template["id"], copy["id"]), headers=workspace.headers, json={"html": "<p>new</p>"}
    )
    assert edited.status_code == 200, edited.text
    await _publish(client, workspace, template["id"], copy["id"])
    old = (await client.get(_url(template["id"], first["id"]), headers=workspace.headers)).json()
    assert old["status"] == "unpublished"
    body = assert_problem(
        await client.patch(
            _url(template["id"], first["id"]), headers=workspace.headers, json={"subject": "x"}
        ),
        409,
    )
    assert body["current_status"] == "unpublished"
    # a version of another template is not found, even in the same workspace
    other = await _template(client, workspace, "Other")
    assert_problem(await client.get(_url(other["id"], first["id"]), headers=workspace.headers), 404)
    assert_problem(
        await client.post(
            _url(other["id"]), headers=workspace.headers, json={"from_version": first["id"]}
        ),
        404,
    )


async def test_publish_replaces_the_published_version_of_the_same_locale_only(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    template = await _template(client, workspace)
    tid = template["id"]
    english = await _draft(client, workspace, tid, subject="Hello")
    french = await _draft(client, workspace, tid, subject="Bonjour", locale="fr")
    await _publish(client, workspace, tid, english["id"])
    await _publish(client, workspace, tid, french["id"])
    info = (await client.get(f"/v1/templates/{tid}", headers=workspace.headers)).json()
    assert sorted((p["locale"], p["number"]) for p in info["published"]) == [("en", 1), ("fr", 2)]

    newer = await _draft(client, workspace, tid, subject="Hi")
    await _publish(client, workspace, tid, newer["id"])
    statuses = {
        v["number"]: v["status"]
        for v in (await client.get(_url(tid), headers=workspace.headers)).json()["data"]
    }
    assert statuses == {1: "unpublished", 2: "published", 3: "published"}

    unpublished = await client.post(_url(tid, french["id"], "unpublish"), headers=workspace.headers)
    assert unpublished.json()["status"] == "unpublished"
    body = assert_problem(
        await client.post(_url(tid, french["id"], "unpublish"), headers=workspace.headers), 409
    )
    assert body["current_status"] == "unpublished"
    info = (await client.get(f"/v1/templates/{tid}", headers=workspace.headers)).json()
    assert [(p["locale"], p["number"]) for p in info["published"]] == [("en", 3)]


async def test_history_newest_first_and_diff(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    tid = (await _template(client, workspace))["id"]
    v1 = await _draft(client, workspace, tid, subject="Same", html="<p>old</p>\n<p>kept</p>")
    await _publish(client, workspace, tid, v1["id"])
    v2 = await _draft(client, workspace, tid, subject="Same", html="<p>new</p>\n<p>kept</p>")
    await _draft(client, workspace, tid)

    history = (await client.get(_url(tid), headers=workspace.headers)).json()
    assert [v["number"] for v in history["data"]] == [3, 2, 1]
    assert history["next_cursor"] is None
    first = history["data"][2]
    assert first["published_at"] is not None and first["created_by"] is not None
    assert "html" not in first  # the history is a summary
    page = (await client.get(_url(tid), headers=workspace.headers, params={"limit": 2})).json()
    assert [v["number"] for v in page["data"]] == [3, 2]
    rest = (
        await client.get(
            _url(tid), headers=workspace.headers, params={"limit": 2, "cursor": page["next_cursor"]}
        )
    ).json()
    assert ([v["number"] for v in rest["data"]], rest["next_cursor"]) == ([1], None)

    diff = (
        await client.get(
            _url(tid, v2["id"], "diff"), headers=workspace.headers, params={"against": v1["id"]}
        )
    ).json()
    fields = {f["field"]: f for f in diff["fields"]}
    assert fields["subject"]["changed"] is False and fields["subject"]["diff"] == ""
    html = fields["html"]
    assert html["changed"] is True
    assert (html["added_lines"], html["removed_lines"]) == (1, 1)
    assert "-<p>old</p>" in html["diff"].splitlines()
    assert "+<p>new</p>" in html["diff"].splitlines()
    assert " <p>kept</p>" in html["diff"].splitlines()
    assert_problem(
        await client.get(
            _url(tid, v2["id"], "diff"),
            headers=workspace.headers,
            params={"against": str(uuid.uuid4())},
        ),
        404,
    )


async def test_rollback_publishes_a_copy_of_an_old_version(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    tid = (await _template(client, workspace))["id"]
    v1 = await _publish(
        client,
        workspace,
        tid,
        (await _draft(client, workspace, tid, subject="One", html=STYLED))["id"],
    )
    v2 = await _publish(
        client, workspace, tid, (await _draft(client, workspace, tid, subject="Two"))["id"]
    )
    response = await client.post(
        f"/v1/templates/{tid}/rollback", headers=workspace.headers, json={"version_id": v1["id"]}
    )
    assert response.status_code == 201, response.text
    restored = response.json()
    assert (restored["number"], restored["status"]) == (3, "published")
    assert restored["id"] != v1["id"]
    for field in ("subject", "html", "text", "locale", "compiled_html", "compiled_text"):
        assert restored[field] == v1[field], field
    current = (await client.get(_url(tid, v2["id"]), headers=workspace.headers)).json()
    assert current["status"] == "unpublished"

    draft = await _draft(client, workspace, tid)
    for target in (draft["id"], restored["id"]):  # a draft; the published version itself
        assert_problem(
            await client.post(
                f"/v1/templates/{tid}/rollback",
                headers=workspace.headers,
                json={"version_id": target},
            ),
            409,
        )
    other = (await _template(client, workspace, "Other"))["id"]
    assert_problem(
        await client.post(
            f"/v1/templates/{other}/rollback",
            headers=workspace.headers,
            json={"version_id": v1["id"]},
        ),
        404,
    )


async def test_publish_inlines_css_and_adds_the_footer_to_marketing_mail_only(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    marketing = (await _template(client, workspace, "News", kind="marketing"))["id"]
    transactional = (await _template(client, workspace, "Reset", kind="transactional"))["id"]
    news = await _publish(
        client,
        workspace,
        marketing,
        (await _draft(client, workspace, marketing, html=STYLED))["id"],
    )
    assert news["html"] == STYLED  # the source stays as written
    assert '<p style="color: red;">Hello {{ contact.first_name }}</p>' in news["compiled_html"]
    assert "<style>" not in news["compiled_html"]
    assert "postroom-footer" in news["compiled_html"]
    assert "{{ unsubscribe_url }}" in news["compiled_html"]
    assert news["text"] is None
    assert "Hello {{ contact.first_name }}" in news["compiled_text"]
    assert "{{ unsubscribe_url }}" in news["compiled_text"]

    reset = await _publish(
        client,
        workspace,
        transactional,
        (await _draft(client, workspace, transactional, html=STYLED))["id"],
    )
    assert '<p style="color: red;">' in reset["compiled_html"]
    assert "postroom-footer" not in reset["compiled_html"]
    assert "unsubscribe" not in reset["compiled_text"].lower()


async def test_mjml_is_compiled_at_publish(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    tid = (await _template(client, workspace))["id"]
    draft = await _draft(client, workspace, tid, html=None, mjml=MJML)
    assert draft["html"] == ""
    published = await _publish(client, workspace, tid, draft["id"])
    assert published["mjml"] == MJML
    assert published["html"].lower().startswith("<!doctype html>")
    assert "Hello {{ contact.first_name }}" in published["html"]
    assert "<mj-" not in published["compiled_html"]
    assert "postroom-footer" in published["compiled_html"]

    bad = await _draft(client, workspace, tid, html=None, mjml="<mjml><mj-body><mj-nope>")
    body = assert_problem(
        await client.post(_url(tid, bad["id"], "publish"), headers=workspace.headers), 422
    )
    assert body["errors"][0]["field"] == "mjml"  # type: ignore[index]
    broken = assert_problem(
        await client.post(
            _url(tid),
            headers=workspace.headers,
            json={"subject": "s", "mjml": "<mjml>{{ x </mjml>"},
        ),
        422,
    )
    assert broken["errors"][0]["field"] == "mjml"  # type: ignore[index]
    assert broken["errors"][0]["line"] == 1  # type: ignore[index]


async def test_preview_with_a_contact_and_with_sample_data(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_workspace: Any
) -> None:
    contact = (
        await client.post(
            "/v1/contacts",
            headers=workspace.headers,
            json={"email": "ada@example.com", "first_name": "Ada", "attributes": {"plan": "pro"}},
        )
    ).json()
    tid = (await _template(client, workspace))["id"]
    draft = await _draft(
        client,
        workspace,
        tid,
        subject="Hi {{ contact.first_name }}",
        preheader="For {{ contact.email }}",
        html=(
            "<p>{{ data.plan }} / {{ greeting }} / {{ contact.nick }}</p>"
            '<a href="{{ unsubscribe_url }}">leave</a>'
        ),
        variables=[
            {"name": "greeting", "fallback": "Welcome"},
            {"name": "contact.nick", "fallback": "friend"},
            {"name": "contact.first_name", "fallback": "there"},
            {"name": "plan", "fallback": "free"},
        ],
    )
    url = _url(tid, draft["id"], "preview")
    with_contact = await client.post(
        url, headers=workspace.headers, json={"contact_id": contact["id"]}
    )
    assert with_contact.status_code == 200, with_contact.text
    shown = with_contact.json()
    assert shown["subject"] == "Hi Ada"
    assert shown["preheader"] == "For ada@example.com"
    assert "<p>pro / Welcome / friend</p>" in shown["html"]
    assert 'href="https://example.com/unsubscribe"' in shown["html"]
    assert "pro / Welcome / friend" in shown["text"]
    assert shown["warnings"] == []

    sample = (
        await client.post(
            url, headers=workspace.headers, json={"data": {"greeting": "Yo", "plan": "basic"}}
        )
    ).json()
    assert sample["subject"] == "Hi there"
    assert "<p>basic / Yo / friend</p>" in sample["html"]
    bare = (await client.post(url, headers=workspace.headers, json={})).json()
    assert "<p>free / Welcome / friend</p>" in bare["html"]

    for contact_id in (str(uuid.uuid4()), await _foreign_contact(client, make_workspace)):
        body = assert_problem(
            await client.post(url, headers=workspace.headers, json={"contact_id": contact_id}), 422
        )
        assert body["errors"][0]["field"] == "contact_id"  # type: ignore[index]

    # a published version previews the same way
    await _publish(client, workspace, tid, draft["id"])
    published = (
        await client.post(url, headers=workspace.headers, json={"contact_id": contact["id"]})
    ).json()
    assert published["html"] == shown["html"]


async def _foreign_contact(client: httpx.AsyncClient, make_workspace: Any) -> str:
    other = await make_workspace("elsewhere")
    response = await client.post(
        "/v1/contacts", headers=other.headers, json={"email": "b@example.com"}
    )
    return str(response.json()["id"])


async def test_preview_render_failures_are_422(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    tid = (await _template(client, workspace))["id"]
    cases = {
        "{% for i in range(1000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}": (
            "render_limit"
        ),
        "{% for i in range(200000) %}x{% endfor %}": "render_error",
        "{{ 'x' * 100000000 }}": "render_limit",
        "{{ contact.email.__class__ }}": None,  # refused at save already
        "{{ missing() }}": "undefined",
    }
    for html, code in cases.items():
        response = await client.post(
            _url(tid), headers=workspace.headers, json={"subject": "s", "html": html}
        )
        if code is None:
            assert_problem(response, 422)
            continue
        assert response.status_code == 201, response.text
        preview = await client.post(
            _url(tid, response.json()["id"], "preview"), headers=workspace.headers, json={}
        )
        body = assert_problem(preview, 422)
        assert body["errors"][0]["code"] == code, html  # type: ignore[index]
        assert body["detail"]


async def test_update_and_delete_templates(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_workspace: Any
) -> None:
    template = await _template(client, workspace)
    await _template(client, workspace, "Taken")
    tid = template["id"]
    changed = await client.patch(
        f"/v1/templates/{tid}",
        headers=workspace.headers,
        json={"name": "Welcome v2", "description": "first mail", "default_locale": "de"},
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["default_locale"]) == ("Welcome v2", "de")
    assert_problem(
        await client.patch(
            f"/v1/templates/{tid}", headers=workspace.headers, json={"name": "Taken"}
        ),
        409,
    )
    assert_problem(
        await client.patch(
            f"/v1/templates/{tid}", headers=workspace.headers, json={"kind": "transactional"}
        ),
        422,
    )
    draft = await _draft(client, workspace, tid)
    assert draft["locale"] == "de"  # new drafts take the default locale

    other = await make_workspace("other")
    assert_problem(await client.get(f"/v1/templates/{tid}", headers=other.headers), 404)
    listing = (await client.get("/v1/templates", headers=other.headers)).json()
    assert listing["data"] == []

    assert (
        await client.delete(f"/v1/templates/{tid}", headers=workspace.headers)
    ).status_code == 204
    assert_problem(await client.get(f"/v1/templates/{tid}", headers=workspace.headers), 404)
    names = [
        t["name"]
        for t in (await client.get("/v1/templates", headers=workspace.headers)).json()["data"]
    ]
    assert names == ["Taken"]


@dataclass(frozen=True)
class _Variant:
    locale: str


def test_pick_version_prefers_the_contacts_locale_then_its_language_then_the_default() -> None:
    en, fr, fr_ca, de = _Variant("en"), _Variant("fr"), _Variant("fr-CA"), _Variant("de")
    published = [en, fr, fr_ca, de]
    assert pick_version(published, "fr-CA", "en") is fr_ca
    assert pick_version(published, "fr-ca", "en") is fr_ca
    assert pick_version(published, "fr_BE", "en") is fr
    assert pick_version([en, fr_ca], "fr-BE", "en") is en  # fr-CA is not fr
    assert pick_version(published, "es", "de") is de
    assert pick_version(published, None, "en") is en
    assert pick_version([en], "it", "en-GB") is en  # the default locale's language
    assert pick_version([fr], "it", "en") is None
    assert pick_version([], "fr", "en") is None


def test_locale_tags_are_normalised() -> None:
    assert normalize_locale("fr_ca") == "fr-CA"
    assert normalize_locale("ZH-hant-tw") == "zh-Hant-TW"
    assert normalize_locale("en") == "en"
    for bad in ("", "f", "english-language-tag-x", "fr CA", "12"):
        with pytest.raises(ValidationFailed):
            normalize_locale(bad)
