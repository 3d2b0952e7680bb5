"""Users pages (admins only): the list, invite (a generated password shown once, after a
redirect), change role,
deactivate / reactivate. Each change swaps one row under HTMX; an admin cannot demote or
deactivate themselves (web.domain.users says why)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from litestar.plugins.flash import flash
from litestar.response import Template

from web.dashboard import shown_once
from web.dashboard.auth import (
    actor_of,
    back_to,
    is_htmx,
    page,
    require_admin,
    require_user,
)
from web.domain import users
from web.domain.errors import DomainError
from web.domain.field_errors import field_of

BASE = "/dashboard/users"
ROLES = tuple(role.value for role in users.Role)


class UsersController(Controller):
    path = BASE
    guards = [require_user, require_admin]
    include_in_schema = False

    @get("/")
    async def list_page(self, request: Request[Any, Any, Any]) -> Template:
        return page(request, "users/list.html", users=await users.list_users(), roles=ROLES)

    @get("/new")
    async def new_form(self, request: Request[Any, Any, Any]) -> Template:
        return page(request, "users/form.html", email="", role="reviewer", roles=ROLES)

    @post("/new")
    async def invite(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await request.form()
        email, role = str(form.get("email", "")).strip(), str(form.get("role", ""))
        try:
            user, password = await users.invite_user(email, role, actor=actor_of(request))
        except DomainError as exc:  # invalid email or role, or the email is taken (409)
            field = field_of(exc)
            return page(
                request,
                "users/form.html",
                exc.status_code,
                email=email,
                role=role,
                roles=ROLES,
                errors={field: exc.message} if field else {},
                error=None if field else exc.message,
            )
        shown_once.keep(request, user.id, password=password)  # post/redirect/get
        return back_to(request, f"{BASE}/{user.id}/created")

    @get("/{user_id:uuid}/created")
    async def created_page(
        self, request: Request[Any, Any, Any], user_id: FromPath[UUID]
    ) -> Response[Any]:
        shown = shown_once.take(request, user_id)
        if shown is None:
            return back_to(request, f"{BASE}#user-{user_id}")  # shown once already
        invited = await users.get_user(user_id)
        response = page(request, "users/created.html", invited=invited, password=shown["password"])
        response.headers["Cache-Control"] = "no-store"
        return response

    async def _changed(
        self, request: Request[Any, Any, Any], user_id: UUID, done: str, error: DomainError | None
    ) -> Response[Any]:
        """After a change (or its refusal): the row under HTMX, else a flash and the list."""
        if is_htmx(request):
            return page(
                request,
                "users/_row.html",
                error.status_code if error else 200,
                row=await users.get_user(user_id),
                roles=ROLES,
                error=error.message if error else None,
            )
        if error:
            flash(request, error.message, category="error")
        else:
            flash(request, done, category="success")
        return back_to(request, f"{BASE}#user-{user_id}")

    @post("/{user_id:uuid}/role")
    async def change_role(
        self, request: Request[Any, Any, Any], user_id: FromPath[UUID]
    ) -> Response[Any]:
        role = str((await request.form()).get("role", ""))
        try:
            await users.change_role(actor_of(request), user_id, role)
        except DomainError as exc:
            return await self._changed(request, user_id, "", exc)
        return await self._changed(request, user_id, f"Role changed to {role}", None)

    @post("/{user_id:uuid}/groups")
    async def change_groups(
        self, request: Request[Any, Any, Any], user_id: FromPath[UUID]
    ) -> Response[Any]:
        text = str((await request.form()).get("groups", ""))
        try:
            groups = await users.set_groups(actor_of(request), user_id, text)
        except DomainError as exc:
            return await self._changed(request, user_id, "", exc)
        done = f"Approver groups: {', '.join(groups)}" if groups else "Approver groups cleared"
        return await self._changed(request, user_id, done, None)

    @post("/{user_id:uuid}/deactivate")
    async def deactivate(
        self, request: Request[Any, Any, Any], user_id: FromPath[UUID]
    ) -> Response[Any]:
        try:
            await users.change_active(request.app.state.arq, actor_of(request), user_id, False)
        except DomainError as exc:
            return await self._changed(request, user_id, "", exc)
        return await self._changed(request, user_id, "User deactivated and signed out", None)

    @post("/{user_id:uuid}/reactivate")
    async def reactivate(
        self, request: Request[Any, Any, Any], user_id: FromPath[UUID]
    ) -> Response[Any]:
        await users.change_active(request.app.state.arq, actor_of(request), user_id, True)
        return await self._changed(request, user_id, "User reactivated", None)
