"""The users pages: list, invite (password shown once), change role, deactivate, reactivate."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import httpx
from litestar import Litestar

from tests.factories import post_form, serving, sign_in
from web.domain.tables import User

USERS = "/dashboard/users"
HTMX = {"HX-Request": "true"}


async def user_row(email: str) -> dict[str, Any]:
    row = await User.select().where(User.email == email).first()
    assert row is not None
    result: dict[str, Any] = row
    return result


def browser_for(app: Litestar) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
    )


async def test_the_list_shows_every_user_with_role_state_and_last_sign_in(
    admin_client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient
) -> None:
    reviewer = await user_row("reviewer@example.com")
    admin = await user_row("admin@example.com")

    response = await admin_client.get(USERS)

    assert response.status_code == 200
    html = response.text
    assert "2 users" in html
    mine = html[html.index(f'<tr id="user-{admin["id"]}">') :].split("</tr>")[0]
    assert 'admin@example.com <span class="muted small">(you)</span>' in mine
    assert "<select" not in mine and "Deactivate" not in mine  # nothing to lock yourself out
    theirs = html[html.index(f'<tr id="user-{reviewer["id"]}">') :].split("</tr>")[0]
    assert '<option value="reviewer" selected>reviewer</option>' in theirs
    assert 'class="badge badge-active">active</span>' in theirs
    assert theirs.count("<time datetime=") == 2  # created and last sign-in
    assert ">Deactivate</button>" in theirs


async def test_an_invited_user_signs_in_with_the_password_shown_once(
    app: Litestar, admin_client: httpx.AsyncClient
) -> None:
    form = await admin_client.get(f"{USERS}/new")
    assert form.status_code == 200
    assert 'name="role" value="reviewer" checked' in form.text

    posted = await post_form(
        admin_client, f"{USERS}/new", {"email": "Nina@Example.com", "role": "reviewer"}
    )
    assert posted.status_code == 303  # post/redirect/get: the password is shown there, once
    response = await admin_client.get(posted.headers["location"])

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "<strong>Shown once.</strong>" in response.text
    found = re.search(r'<code id="new-password">([^<]+)</code>', response.text)
    assert found
    password = found.group(1)
    assert '<button type="button" data-copy="new-password">Copy</button>' in response.text
    stored = await user_row("nina@example.com")
    assert stored["role"] == "reviewer" and password not in stored["password_hash"]
    assert password not in (await admin_client.get(USERS)).text
    async with serving(app), browser_for(app) as nina:
        await sign_in(nina, "nina@example.com", password)
        page = await nina.get("/dashboard/executions")
        assert page.status_code == 200
        assert "nina@example.com · reviewer" in page.text


async def test_invite_problems_re_render_the_form(admin_client: httpx.AsyncClient) -> None:
    taken = await post_form(
        admin_client, f"{USERS}/new", {"email": "admin@example.com", "role": "reviewer"}
    )
    bad_email = await post_form(admin_client, f"{USERS}/new", {"email": "nope", "role": "admin"})
    bad_role = await post_form(
        admin_client, f"{USERS}/new", {"email": "eve@example.com", "role": "owner"}
    )

    assert taken.status_code == 409
    assert "A user with the email admin@example.com already exists" in taken.text
    assert bad_email.status_code == 400 and "Enter a valid email address" in bad_email.text
    assert 'value="nope"' in bad_email.text
    assert bad_role.status_code == 400 and "Role must be admin or reviewer" in bad_role.text
    assert await User.count() == 1


async def test_a_role_change_takes_effect_at_the_next_request(
    admin_client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient
) -> None:
    reviewer = await user_row("reviewer@example.com")
    assert (await reviewer_client.get("/dashboard/keys")).status_code == 403

    promoted = await post_form(admin_client, f"{USERS}/{reviewer['id']}/role", {"role": "admin"})

    assert promoted.status_code == 303
    assert promoted.headers["location"] == f"{USERS}#user-{reviewer['id']}"
    assert "Role changed to admin" in (await admin_client.get(USERS)).text
    assert (await reviewer_client.get("/dashboard/keys")).status_code == 200

    demoted = await post_form(
        admin_client, f"{USERS}/{reviewer['id']}/role", {"role": "reviewer"}, headers=HTMX
    )

    assert demoted.status_code == 200
    assert demoted.text.startswith(f'<tr id="user-{reviewer["id"]}">')
    assert demoted.text.count("<tr") == 1
    assert '<option value="reviewer" selected>reviewer</option>' in demoted.text
    assert (await reviewer_client.get("/dashboard/keys")).status_code == 403


async def test_a_deactivated_user_is_signed_out_and_can_be_reactivated(
    app: Litestar, admin_client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient
) -> None:
    reviewer = await user_row("reviewer@example.com")

    response = await post_form(admin_client, f"{USERS}/{reviewer['id']}/deactivate")

    assert response.status_code == 303
    page = (await admin_client.get(USERS)).text
    assert "User deactivated and signed out" in page
    assert f'<tr id="user-{reviewer["id"]}" class="inactive">' in page
    assert not (await user_row("reviewer@example.com"))["active"]
    signed_out = await reviewer_client.get("/dashboard/executions")
    assert signed_out.status_code == 303
    assert signed_out.headers["location"].startswith("/dashboard/login")
    async with serving(app), browser_for(app) as again:
        refused = await post_form(
            again,
            "/dashboard/login",
            {"email": "reviewer@example.com", "password": "correct horse battery staple"},
        )
        assert refused.status_code == 400

    back = await post_form(admin_client, f"{USERS}/{reviewer['id']}/reactivate", headers=HTMX)

    assert back.status_code == 200
    assert back.text.startswith(f'<tr id="user-{reviewer["id"]}">')
    assert ">Deactivate</button>" in back.text
    assert (await user_row("reviewer@example.com"))["active"]
    # The session from before the deactivation stays dead; a new sign-in works.
    assert (await reviewer_client.get("/dashboard/executions")).status_code == 303
    async with serving(app), browser_for(app) as again:
        await sign_in(again, "reviewer@example.com")
        assert (await again.get("/dashboard/executions")).status_code == 200


async def test_an_admin_cannot_demote_or_deactivate_themselves(
    admin_client: httpx.AsyncClient,
) -> None:
    me = (await user_row("admin@example.com"))["id"]

    demote = await post_form(admin_client, f"{USERS}/{me}/role", {"role": "reviewer"})
    assert demote.status_code == 303
    page = (await admin_client.get(USERS)).text
    assert "You cannot change your own role: ask another admin to do it" in page

    deactivate = await post_form(admin_client, f"{USERS}/{me}/deactivate", headers=HTMX)
    assert deactivate.status_code == 403
    assert deactivate.text.startswith(f'<tr id="user-{me}">')
    assert "You cannot deactivate yourself: ask another admin to do it" in deactivate.text

    row = await user_row("admin@example.com")
    assert row["role"] == "admin" and row["active"]
    assert (await admin_client.get("/dashboard/keys")).status_code == 200


async def test_an_unknown_user_is_a_404(admin_client: httpx.AsyncClient) -> None:
    response = await post_form(admin_client, f"{USERS}/{UUID(int=0)}/reactivate", headers=HTMX)
    assert response.status_code == 404
    assert "User not found" in response.text


async def test_reviewers_get_403_on_every_user_url(
    admin_client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient
) -> None:
    admin = (await user_row("admin@example.com"))["id"]
    for url in (USERS, f"{USERS}/new"):
        response = await reviewer_client.get(url)
        assert response.status_code == 403, url
        assert "This page is for admins only" in response.text
    for url, data in [
        (f"{USERS}/new", {"email": "eve@example.com", "role": "admin"}),
        (f"{USERS}/{admin}/role", {"role": "reviewer"}),
        (f"{USERS}/{admin}/deactivate", {}),
        (f"{USERS}/{admin}/reactivate", {}),
    ]:
        response = await post_form(reviewer_client, url, data)
        assert response.status_code == 403, url
        assert "This page is for admins only" in response.text
    row = await user_row("admin@example.com")
    assert row["role"] == "admin" and row["active"]
    assert await User.count() == 2


async def test_user_changes_need_the_csrf_token(
    admin_client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient
) -> None:
    reviewer = (await user_row("reviewer@example.com"))["id"]
    for url, data in [
        (f"{USERS}/new", {"email": "eve@example.com", "role": "admin"}),
        (f"{USERS}/{reviewer}/role", {"role": "admin"}),
        (f"{USERS}/{reviewer}/deactivate", {}),
    ]:
        response = await admin_client.post(url, data=data)
        assert response.status_code == 403, url
        assert "Your form expired or came from elsewhere" in response.text
    row = await user_row("reviewer@example.com")
    assert row["role"] == "reviewer" and row["active"]
    assert await User.count() == 2


async def test_emails_are_escaped(admin_client: httpx.AsyncClient) -> None:
    email = "<b>x</b>@example.com"
    posted = await post_form(admin_client, f"{USERS}/new", {"email": email, "role": "reviewer"})
    response = await admin_client.get(posted.headers["location"])
    assert response.status_code == 200
    for html in (response.text, (await admin_client.get(USERS)).text):
        assert "<b>x</b>" not in html
        assert "&lt;b&gt;x&lt;/b&gt;@example.com" in html


# --- issue 11: post/redirect/get, errors next to their field ---------------------------------


async def test_reloading_the_created_page_does_not_show_the_password_again(
    admin_client: httpx.AsyncClient,
) -> None:
    posted = await post_form(
        admin_client, f"{USERS}/new", {"email": "once@example.com", "role": "reviewer"}
    )
    assert posted.status_code == 303
    location = posted.headers["location"]
    assert re.fullmatch(rf"{USERS}/[0-9a-f-]{{36}}/created", location)
    first = await admin_client.get(location)
    found = re.search(r'<code id="new-password">([^<]+)</code>', first.text)
    assert found and first.headers["cache-control"] == "no-store"

    again = await admin_client.get(location)
    assert again.status_code == 303
    assert found.group(1) not in (await admin_client.get(USERS)).text
    assert await User.count() == 2


async def test_invite_errors_sit_next_to_their_field(admin_client: httpx.AsyncClient) -> None:
    for form, field, status in (
        ({"email": "nope", "role": "admin"}, "email", 400),
        ({"email": "admin@example.com", "role": "admin"}, "email", 409),
        ({"email": "eve@example.com", "role": "owner"}, "role", 400),
    ):
        response = await post_form(admin_client, f"{USERS}/new", form)
        assert response.status_code == status, form
        html = response.text
        assert html.count('role="alert"') == 1, form
        assert f'<div class="field-error" id="{field}-error">' in html, form
        top = html[html.index('id="user-form"') : html.index("<label>Email")]
        assert 'class="flash' not in top, form
