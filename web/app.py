"""create_app(): plugins, routers, templates, static files, error handlers. No logic here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from arq.connections import ArqRedis
from litestar import Litestar, Request, Response, Router, get
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import CacheControlHeader, State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.flash import FlashConfig, FlashPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect
from litestar.template import TemplateConfig

from web import process
from web.api.errors import EXCEPTION_HANDLERS
from web.api.executions import PublicExecutionsController
from web.api.limit_headers import limit_headers_middleware
from web.api.whatsapp import WhatsAppWebhookController
from web.dashboard.auth import LoginRequired
from web.dashboard.errors import error_page, redirect_to_login
from web.dashboard.headers import harden_dashboard_answers
from web.dashboard.router import dashboard_router
from web.dashboard.sessions import CSRF_COOKIE, SessionConfig
from web.dashboard.templating import register_template_helpers
from web.domain import health as health_checks
from web.domain import queue, status_events
from web.domain.pool import start_pool
from web.domain.script_client import ScriptClient
from web.forwarded import TrustedProxies, with_proxy_headers
from web.logs import configure_logging
from web.metrics import metrics_endpoint, with_request_metrics
from web.settings import Settings, get_settings, secret_key_is_set
from web.static_files import static_files_router

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_API_PATH = "/api/v1/public"
# The /schema viewer's files, vendored from the npm package (static/vendor/README.md): the page
# works without internet.
SWAGGER_UI = "/static/vendor/swagger-ui-dist-5.35.0"
FAVICON = ROOT / "static" / "favicon.ico"


@asynccontextmanager
async def database(app: Litestar) -> AsyncIterator[None]:
    from piccolo_conf import DB

    # Only close a pool this app opened (tests share one pool between app and worker).
    owns_pool = DB.pool is None
    if owns_pool:
        await start_pool(DB, min_size=2, max_size=20)
    try:
        yield
    finally:
        if owns_pool:
            await DB.close_connection_pool()


@asynccontextmanager
async def job_queue(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # No connection is made here: the app starts while Redis is down and answers 503 until it
    # is back (web.api.errors), instead of refusing to start.
    pool = queue.connect(settings.redis_url, settings.redis_timeout_seconds)
    app.state.arq = pool
    # A lean connection for the Lua scripts of every public request: the rate limiter and
    # enqueueing (web.domain.script_client).
    app.state.scripts = ScriptClient(settings.redis_url, settings.redis_timeout_seconds)
    try:
        yield
    finally:
        await app.state.scripts.close()
        await pool.aclose()


@asynccontextmanager
async def status_stream(app: Litestar) -> AsyncIterator[None]:
    """One LISTEN connection of this process for GET /executions/:id/events (it connects in
    the background, so the app starts while PostgreSQL is down)."""
    settings: Settings = app.state.settings
    listener = status_events.StatusListener(settings.database_url)
    app.state.status_listener = listener
    await listener.start()
    try:
        yield
    finally:
        await listener.stop()


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_arq(state: State) -> ArqRedis:
    pool: ArqRedis = state.arq
    return pool


@get("/health", include_in_schema=False)
async def health(state: State) -> health_checks.Health:
    return await health_checks.check(state.arq)


@get("/", include_in_schema=False)
async def index() -> Redirect:
    return Redirect("/dashboard", status_code=303)


@get(
    "/favicon.ico",
    include_in_schema=False,
    cache_control=CacheControlHeader(max_age=86400, public=True),
    sync_to_thread=False,
)
def favicon() -> Response[bytes]:
    """Browsers ask for it on every page (the pages also link static/favicon.svg)."""
    return Response(FAVICON.read_bytes(), media_type="image/x-icon")


def schema_viewer() -> SwaggerRenderPlugin:
    """Swagger UI at /schema, from static/vendor/ rather than a CDN."""
    return SwaggerRenderPlugin(
        path="/",
        js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        css_url=f"{SWAGGER_UI}/swagger-ui.css",
        standalone_preset_js_url=f"{SWAGGER_UI}/swagger-ui-standalone-preset.js",
        favicon="<link rel='icon' type='image/svg+xml' href='/static/favicon.svg'>",
    )


def _by_path(api_handler: Any, page_handler: Any) -> Any:
    """Errors under /dashboard are pages; everywhere else, the public API's JSON shape."""

    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        if request.url.path.startswith("/dashboard"):
            return page_handler(request, exc)  # type: ignore[no-any-return]
        return api_handler(request, exc)  # type: ignore[no-any-return]

    return handle


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    if not secret_key_is_set():
        logging.getLogger("flowgate.settings").warning(
            "FLOWGATE_SECRET_KEY is not set: using a random key for this process only"
        )
    template_config = TemplateConfig(
        directory=ROOT / "templates",
        engine=JinjaTemplateEngine,
        engine_callback=register_template_helpers,
    )
    # Our own sessions in Redis (web.dashboard.sessions), only under /dashboard.
    sessions = SessionConfig(
        csrf_secret=settings.secret_key,
        max_age=settings.session_max_age_seconds,
        secure=settings.cookie_secure,
    )
    public_api = Router(
        path=PUBLIC_API_PATH,
        route_handlers=[PublicExecutionsController],
        middleware=[limit_headers_middleware],
    )
    return Litestar(
        route_handlers=[
            public_api,
            dashboard_router(),
            WhatsAppWebhookController,
            health,
            metrics_endpoint,
            index,
            favicon,
            static_files_router(ROOT / "static"),
        ],
        middleware=[sessions.middleware],
        csrf_config=CSRFConfig(
            secret=settings.secret_key,
            cookie_name=CSRF_COOKIE,
            cookie_secure=settings.cookie_secure,
            cookie_httponly=True,  # the pages carry the token; no script reads the cookie
            exclude=["^/api/", "^/webhooks/"],
        ),
        before_send=[harden_dashboard_answers],
        plugins=[FlashPlugin(config=FlashConfig(template_config=template_config))],
        state=State({"settings": settings}),
        dependencies={
            "settings": Provide(provide_settings, sync_to_thread=False),
            "arq": Provide(provide_arq, sync_to_thread=False),
        },
        lifespan=[database, job_queue, status_stream],
        exception_handlers={
            LoginRequired: _by_path(EXCEPTION_HANDLERS[HTTPException], redirect_to_login),
            **{kind: _by_path(handler, error_page) for kind, handler in EXCEPTION_HANDLERS.items()},
        },
        request_max_body_size=settings.max_body_bytes,
        # Our JSON logs (web.logs) stay the root handler; Litestar's own config would replace it.
        logging_config=None,
        template_config=template_config,
        openapi_config=OpenAPIConfig(
            title="flowgate public API",
            version="1.0.0",
            description="Run workflows (agents) with a human approval gate.",
            render_plugins=[schema_viewer()],
        ),
    )


def create_served_app() -> Any:
    """The app as `flowgate serve` runs it, under granian or uvicorn: the client address and
    scheme come from X-Forwarded-For / X-Forwarded-Proto when the peer is a trusted proxy
    (FORWARDED_ALLOW_IPS, default 127.0.0.1), and only a valid IP address is taken
    (web.forwarded). Every request is counted and timed by its route (web.metrics). Called
    once per server worker process, which then settles its heap (web.process)."""
    settings = get_settings()
    app = with_request_metrics(create_app(settings))
    served = with_proxy_headers(app, TrustedProxies(settings.forwarded_allow_ips))
    process.settle_heap()
    return served
