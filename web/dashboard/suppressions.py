"""The suppression list page (admins only): search, add a number with a reason, remove one.
Plain forms with redirects (a refused number is shown next to its field); the rules live in
web.domain.suppressions."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get, post
from litestar.plugins.flash import flash
from litestar.response import Template

from web.dashboard.auth import back_to, page, require_admin, require_user
from web.domain import suppressions
from web.domain.errors import DomainError
from web.domain.field_errors import field_of

BASE = "/dashboard/suppressions"
SHOWN = 500


class SuppressionsController(Controller):
    path = BASE
    guards = [require_user, require_admin]
    include_in_schema = False

    async def _list(
        self,
        request: Request[Any, Any, Any],
        status_code: int = 200,
        **form: Any,
    ) -> Template:
        search = str(request.query_params.get("q", "")).strip()[:100]
        listed = await suppressions.list_suppressions(search, limit=SHOWN + 1)
        return page(
            request,
            "suppressions/list.html",
            status_code,
            rows=listed[:SHOWN],
            more=len(listed) > SHOWN,
            search=search,
            phone=form.get("phone", ""),
            reason=form.get("reason", ""),
            errors=form.get("errors", {}),
            error=form.get("error"),
        )

    @get("/")
    async def list_page(self, request: Request[Any, Any, Any]) -> Template:
        return await self._list(request)

    @post("/")
    async def add(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await request.form()
        phone, reason = str(form.get("phone", "")).strip(), str(form.get("reason", "")).strip()
        try:
            normalised = suppressions.normalise(phone)
            added = await suppressions.add(normalised, reason, suppressions.Source.DASHBOARD)
        except DomainError as exc:
            field = field_of(exc)
            return await self._list(
                request,
                exc.status_code,
                phone=phone,
                reason=reason,
                errors={field: exc.message} if field else {},
                error=None if field else exc.message,
            )
        done = "added to" if added else "already on (reason updated)"
        flash(request, f"{normalised} {done} the suppression list", category="success")
        return back_to(request, f"{BASE}?{urlencode({'q': normalised})}")

    @post("/remove")
    async def remove(self, request: Request[Any, Any, Any]) -> Response[Any]:
        phone = str((await request.form()).get("phone", ""))
        try:
            await suppressions.remove(phone)
        except DomainError as exc:
            flash(request, exc.message, category="error")
            return back_to(request, BASE)
        flash(request, f"{suppressions.normalise(phone)} removed: it may be messaged again",
              category="success")  # fmt: skip
        return back_to(request, BASE)
