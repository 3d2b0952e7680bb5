"""API keys pages (admins only): the list with usage bars, create and edit forms (each problem
next to its field), the show-once page for new secrets (post/redirect/get, the secret carried
once in the server-side session), revoke, rotate, and a key's page with a 30-day chart (inline
SVG). A revoked key is read-only."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from arq.connections import ArqRedis
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.plugins.flash import flash
from litestar.response import Template

from web.dashboard import shown_once
from web.dashboard.auth import actor_of, back_to, page, require_admin, require_user
from web.domain import api_keys, executions, workflows
from web.domain.errors import Conflict, InvalidInput
from web.domain.field_errors import FieldError
from web.settings import Settings

BASE = "/dashboard/keys"
EXPIRY_FORMAT = "%Y-%m-%dT%H:%M"  # <input type="datetime-local">, read as UTC

# The inline SVG chart: a viewBox in user units, scaled by CSS to the card's width.
CHART_WIDTH, CHART_HEIGHT = 640, 200
CHART_LEFT, CHART_RIGHT, CHART_TOP, CHART_BOTTOM = 34, 22, 10, 26


def _text(form: FormMultiDict, name: str) -> str:
    return str(form.get(name, "") or "").strip()


def _values_from_form(form: FormMultiDict) -> dict[str, Any]:
    """What the form sent, as strings and lists: re-rendered as typed when it has a problem."""
    return {
        "name": _text(form, "name"),
        "monthly_limit": _text(form, "monthly_limit"),
        "rate_limit_burst": _text(form, "rate_limit_burst"),
        "rate_limit_refill_per_second": _text(form, "rate_limit_refill_per_second"),
        "expires_at": _text(form, "expires_at"),
        "allowed_workflows": [str(v) for v in form.getall("allowed_workflows", [])],
        "webhook_url": _text(form, "webhook_url"),
        "webhook_events": [str(v) for v in form.getall("webhook_events", [])],
        "generate_secret": _text(form, "generate_secret") == "on",
        "webhook_secret": _text(form, "webhook_secret") or api_keys.SecretChange.KEEP.value,
    }


def _values_of(key: api_keys.KeyView) -> dict[str, Any]:
    """A stored key as the edit form's values (never its secrets)."""

    def shown(value: Any) -> str:
        return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    expires = key.expires_at
    return {
        "name": key.name,
        "monthly_limit": str(key.monthly_limit),
        "rate_limit_burst": shown(key.rate_limit_burst),
        "rate_limit_refill_per_second": shown(key.rate_limit_refill_per_second),
        "expires_at": expires.astimezone(UTC).strftime(EXPIRY_FORMAT) if expires else "",
        "allowed_workflows": list(key.allowed_workflows),
        "webhook_url": key.webhook_url or "",
        "webhook_events": list(key.webhook_events),
        "generate_secret": False,
        "webhook_secret": api_keys.SecretChange.KEEP.value,
    }


NEW_KEY_VALUES: dict[str, Any] = {
    "name": "",
    "monthly_limit": str(api_keys.DEFAULT_MONTHLY_LIMIT),
    "rate_limit_burst": "",
    "rate_limit_refill_per_second": "",
    "expires_at": "",
    "allowed_workflows": [],
    "webhook_url": "",
    "webhook_events": list(api_keys.DEFAULT_WEBHOOK_EVENTS),
    "generate_secret": True,
    "webhook_secret": api_keys.SecretChange.KEEP.value,
}


def _integer(value: str, field: str, label: str) -> int | None:
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise FieldError(field, f"{label} must be a whole number") from None
    return number  # bounds: web.domain.api_keys checks them for the form and the CLI alike


def _number(value: str, field: str, label: str) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise FieldError(field, f"{label} must be a number")
    return number


def _expiry(value: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FieldError(
            "expires_at", "Expiry must be a date and time like 2026-01-01T00:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _secret_change(value: str) -> api_keys.SecretChange:
    try:
        return api_keys.SecretChange(value)
    except ValueError:
        raise FieldError(
            "webhook_secret", "Choose to keep, replace or remove the webhook secret"
        ) from None


def _settings(values: dict[str, Any]) -> api_keys.KeySettings:
    """The form as KeySettings; FieldError for a field that is not even a number or a date
    (the domain checks the rest, for the form and the CLI alike)."""
    monthly_limit = _integer(values["monthly_limit"], "monthly_limit", "Monthly limit")
    if monthly_limit is None:
        raise FieldError("monthly_limit", "Monthly limit is required (0 blocks every execution)")
    return api_keys.KeySettings(
        name=values["name"],
        monthly_limit=monthly_limit,
        rate_limit_burst=_integer(values["rate_limit_burst"], "rate_limit_burst", "Burst"),
        rate_limit_refill_per_second=_number(
            values["rate_limit_refill_per_second"], "rate_limit_refill_per_second", "Refill rate"
        ),
        expires_at=_expiry(values["expires_at"]),
        allowed_workflows=values["allowed_workflows"],
        webhook_url=values["webhook_url"] or None,
        webhook_events=values["webhook_events"],
    )


def _chart(days: list[executions.DayCount]) -> dict[str, Any]:
    """Bars, ticks and labels of the executions-per-day chart, in the SVG's user units."""
    plot_width = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    top = max((day.count for day in days), default=0) or 1
    slot = plot_width / max(len(days), 1)
    bars: list[dict[str, Any]] = []
    for index, day in enumerate(days):
        height = plot_height * day.count / top
        bars.append(
            {
                "day": day.day,
                "count": day.count,
                "slot_x": round(CHART_LEFT + index * slot, 2),
                "x": round(CHART_LEFT + index * slot + slot * 0.15, 2),
                "y": round(CHART_TOP + plot_height - height, 2),
                "height": round(height, 2),
            }
        )
    last = len(days) - 1
    label_every = 7
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_LEFT,
        "right": CHART_WIDTH - CHART_RIGHT,
        "top": CHART_TOP,
        "bottom": CHART_TOP + plot_height,
        "plot_height": plot_height,
        "slot": round(slot, 2),
        "bar_width": round(slot * 0.7, 2),
        "bars": bars,
        "total": sum(day.count for day in days),
        "y_ticks": [
            {"value": value, "y": round(CHART_TOP + plot_height * (1 - value / top), 2)}
            for value in sorted({0, top // 2, top})
        ],
        # Every 7th day back from today, so today is always labelled.
        "x_labels": [
            {"text": bar["day"].strftime("%b %d"), "x": round(bar["slot_x"] + slot / 2, 2)}
            for index, bar in enumerate(bars)
            if (last - index) % label_every == 0
        ],
    }


def _rate_defaults(settings: Settings) -> dict[str, Any]:
    """The token bucket a key gets when its own figures are blank (only these, never the rest
    of the settings, go into a template)."""
    return {
        "rate_limit_burst": settings.rate_limit_burst,
        "rate_limit_refill_per_second": f"{settings.rate_limit_refill_per_second:g}",
    }


def _show_once(request: Request[Any, Any, Any], key_id: UUID, **secrets: Any) -> Response[Any]:
    """Post/redirect/get for a new secret (web.dashboard.shown_once)."""
    shown_once.keep(request, key_id, **secrets)
    return back_to(request, f"{BASE}/{key_id}/created")


def _error_page_context(exc: InvalidInput) -> dict[str, Any]:
    """A form's problem: next to its field when it names one, else above the form."""
    if isinstance(exc, FieldError):
        return {"errors": {exc.field: exc.message}, "error": None}
    return {"errors": {}, "error": exc.message}


class KeysController(Controller):
    path = BASE
    guards = [require_user, require_admin]
    include_in_schema = False

    async def _form(
        self,
        request: Request[Any, Any, Any],
        settings: Settings,
        values: dict[str, Any],
        key: api_keys.KeyView | None = None,
        problem: InvalidInput | None = None,
    ) -> Template:
        return page(
            request,
            "keys/form.html",
            200 if problem is None else 400,
            key=key,
            values=values,
            **(_error_page_context(problem) if problem else {"errors": {}, "error": None}),
            workflows=await workflows.list_workflow_choices(),
            events=api_keys.WEBHOOK_EVENTS,
            defaults=_rate_defaults(settings),
        )

    @get("/")
    async def list_page(self, request: Request[Any, Any, Any]) -> Template:
        return page(request, "keys/list.html", keys=await api_keys.list_keys_with_usage())

    @get("/new")
    async def new_form(
        self, request: Request[Any, Any, Any], settings: NamedDependency[Settings]
    ) -> Template:
        return await self._form(request, settings, dict(NEW_KEY_VALUES))

    @post("/new")
    async def create(
        self, request: Request[Any, Any, Any], settings: NamedDependency[Settings]
    ) -> Response[Any]:
        values = _values_from_form(await request.form())
        # A signing secret only means something with a URL to sign for.
        wants_secret = values["generate_secret"] and bool(values["webhook_url"])
        webhook_secret = api_keys.generate_webhook_secret() if wants_secret else None
        try:
            new = await api_keys.create_key(
                _settings(values), actor=actor_of(request), webhook_secret=webhook_secret
            )
        except InvalidInput as exc:
            return await self._form(request, settings, values, problem=exc)
        return _show_once(
            request,
            new.id,
            heading="API key created",
            secret=new.secret,
            webhook_secret=webhook_secret,
        )

    @get("/{key_id:uuid}/created")
    async def created_page(
        self, request: Request[Any, Any, Any], key_id: FromPath[UUID]
    ) -> Response[Any]:
        shown = shown_once.take(request, key_id)
        if shown is None:
            # Reloaded, or opened from history: the secret was shown once already.
            return back_to(request, f"{BASE}/{key_id}")
        key = await api_keys.get_key(key_id)
        until = shown.get("previous_valid_until")
        response = page(
            request,
            "keys/created.html",
            heading=shown["heading"],
            key=key,
            secret=shown.get("secret"),
            webhook_secret=shown.get("webhook_secret"),
            previous_valid_until=datetime.fromisoformat(until) if until else None,
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @get("/{key_id:uuid}")
    async def detail_page(
        self,
        request: Request[Any, Any, Any],
        key_id: FromPath[UUID],
        settings: NamedDependency[Settings],
    ) -> Template:
        key = await api_keys.get_key(key_id)
        return page(
            request,
            "keys/detail.html",
            key=key,
            defaults=_rate_defaults(settings),
            chart=_chart(await executions.executions_per_day(key_id)),
            grace_hours=int(api_keys.DEFAULT_ROTATION_GRACE.total_seconds() // 3600),
        )

    @get("/{key_id:uuid}/edit")
    async def edit_form(
        self,
        request: Request[Any, Any, Any],
        key_id: FromPath[UUID],
        settings: NamedDependency[Settings],
    ) -> Response[Any]:
        key = await api_keys.get_key(key_id)
        if key.read_only:
            flash(request, api_keys.REVOKED_READ_ONLY, category="error")
            return back_to(request, f"{BASE}/{key_id}")
        return await self._form(request, settings, _values_of(key), key=key)

    @post("/{key_id:uuid}/edit")
    async def update(
        self,
        request: Request[Any, Any, Any],
        key_id: FromPath[UUID],
        settings: NamedDependency[Settings],
        arq: NamedDependency[ArqRedis],
    ) -> Response[Any]:
        key = await api_keys.get_key(key_id)
        if key.read_only:
            flash(request, api_keys.REVOKED_READ_ONLY, category="error")
            return back_to(request, f"{BASE}/{key_id}")
        values = _values_from_form(await request.form())
        try:
            new_secret = await api_keys.update_key(
                arq,
                key_id,
                _settings(values),
                _secret_change(values["webhook_secret"]),
                actor=actor_of(request),
            )
        except Conflict as exc:  # revoked: read-only
            flash(request, exc.message, category="error")
            return back_to(request, f"{BASE}/{key_id}")
        except InvalidInput as exc:
            return await self._form(request, settings, values, key, exc)
        if new_secret:
            return _show_once(request, key_id, heading="API key saved", webhook_secret=new_secret)
        flash(request, "API key saved", category="success")
        return back_to(request, f"{BASE}/{key_id}")

    @post("/{key_id:uuid}/revoke")
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        key_id: FromPath[UUID],
        arq: NamedDependency[ArqRedis],
    ) -> Response[Any]:
        await api_keys.revoke_key(arq, key_id, actor=actor_of(request))
        flash(request, "API key revoked: it answers 403 from now on", category="success")
        return back_to(request, f"{BASE}/{key_id}")

    @post("/{key_id:uuid}/rotate")
    async def rotate(
        self,
        request: Request[Any, Any, Any],
        key_id: FromPath[UUID],
        arq: NamedDependency[ArqRedis],
    ) -> Response[Any]:
        form = await request.form()
        try:
            hours = _number(_text(form, "grace_hours"), "grace_hours", "Grace period")
            rotated = await api_keys.rotate_key(
                arq, key_id, api_keys.rotation_grace(hours), actor=actor_of(request)
            )
        except (InvalidInput, Conflict) as exc:
            flash(request, exc.message, category="error")
            return back_to(request, f"{BASE}/{key_id}#rotate")
        return _show_once(
            request,
            rotated.id,
            heading="API key rotated",
            secret=rotated.secret,
            previous_valid_until=rotated.previous_valid_until.isoformat(),
        )
