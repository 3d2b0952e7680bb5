"""A fuzz pass over the dashboard's GET routes (issue 12, item 9), as the public API has
schemathesis: every GET route under /dashboard and its query parameters, read from the app's
own route handlers, get typed garbage (huge and negative numbers, dates out of range, NUL,
unicode, very long strings, repeated and unknown parameters) from a signed-in admin, through
the real server. No answer may be a 5xx.

Deterministic (hypothesis, derandomized) and bounded: FLOWGATE_DASHBOARD_FUZZ_EXAMPLES requests
(default 400, well under a minute). Every 5xx found is listed at the end, not only the first.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar.params import ParameterKwarg
from litestar.routes import HTTPRoute

from tests import factories
from tests.live_server import LiveServer
from web.app import create_app
from web.domain import users
from web.domain.actors import Actor
from web.domain.tables import ApiKey, ExecutionRow, User
from web.domain.workflows import BFSI_WORKFLOW_ID

EXAMPLES = int(os.environ.get("FLOWGATE_DASHBOARD_FUZZ_EXAMPLES", "400"))


@dataclass(frozen=True)
class Route:
    path: str  # Litestar's, e.g. /dashboard/executions/{execution_id:uuid}
    path_params: dict[str, type]
    query_params: dict[str, type]  # name -> the type the handler takes (Optional unwrapped)


def _base_type(annotation: Any) -> type:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _base_type(args[0])
    return annotation if isinstance(annotation, type) else str


def dashboard_get_routes() -> list[Route]:
    """From the route handlers themselves, so a new page or parameter is fuzzed too."""
    found = []
    for route in create_app().routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/dashboard"):
            continue
        for handler in route.route_handlers:
            if "GET" not in handler.http_methods:
                continue
            path_params = {name: p.type for name, p in route.path_parameters.items()}
            query = {
                name: _base_type(field.annotation)
                for name, field in handler.parsed_fn_signature.parameters.items()
                if name not in path_params
                and isinstance(field.kwarg_definition, ParameterKwarg)
                and type(field.kwarg_definition).__name__ == "QueryParameter"
            }
            found.append(Route(route.path, path_params, query))
    return found


ROUTES = dashboard_get_routes()
# Routes with query parameters get most of the requests: that is where the input is.
WEIGHTED_ROUTES = [route for route in ROUTES for _ in range(1 + 4 * len(route.query_params))]

EDGE_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "0",
    "-1",
    "1e309",
    "nan",
    "inf",
    "99999999999999999999",
    "-99999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "0001-01-01",
    "9999-12-31",
    "10000-01-01",
    "2025-02-30",
    "2025-13-01",
    "-2025-01-01",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "../../../etc/passwd",
    "%00",
    "%%",
    "<script>alert(1)</script>",
    "{{ 7 * 7 }}",
    "' OR 1=1 --",
    "\u202e\u0301\U0001f600",
    "\ufeff",
    "a" * 4000,
    "\u00e9" * 2000,
]
# Dates at and past the ends of what Python and PostgreSQL hold, for the date filters.
EDGE_DATES = ["0001-01-01", "0001-01-02", "9999-12-31", "9999-12-30", "10000-01-01", "0000-01-01"]
TEXT = st.one_of(
    st.sampled_from(EDGE_TEXT),
    st.sampled_from(EDGE_DATES),
    st.text(max_size=40),
    st.text(min_size=300, max_size=1000),
    st.integers().map(str),
    st.dates(min_value=date(1, 1, 1)).map(date.isoformat),
)
EDGE_INTS = [
    "99999999999999999999",
    str(2**63 // 50),  # an offset of 50 a page past PostgreSQL's bigint
    str(2**63 - 1),
    str(2**64),
    "-99999999999999999999",
    "1000001",
    "1000000",
    "2147483648",
    "0",
    "-1",
    "1.5",
    "1e3",
    "+1",
    " 1",
    "0x10",
]
BY_TYPE: dict[type, st.SearchStrategy[str]] = {
    int: st.one_of(
        st.sampled_from(EDGE_INTS),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        TEXT,
    ),
    UUID: st.one_of(st.uuids().map(str), TEXT),
    str: TEXT,
}


@dataclass
class Fixtures:
    """Real ids for path parameters, so routes are reached past their 404s."""

    ids: dict[str, str]


@pytest.fixture
async def live_admin(
    db_pool: None, run_worker: Any
) -> AsyncIterator[tuple[LiveServer, Fixtures, httpx.Cookies]]:
    await users.create_user("admin@example.com", factories.PASSWORD, "admin", actor=Actor.system())
    server = LiveServer().start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as browser:
            await factories.sign_in(browser, "admin@example.com")
            key = await factories.create_key(name="fuzz")
            started = await browser.post(
                "/api/v1/public/agents/workflow_bfsi_marketing_template/execute",
                json={"input": {"csvData": factories.rows(2)}},
                headers=factories.auth(key.secret),
            )
            execution_id = started.json()["executionId"]
            await run_worker()  # pending approval: the review screen and its rows exist
            row = await ExecutionRow.select(ExecutionRow.id).first()
            key_row = await ApiKey.select(ApiKey.id).first()
            user = await User.select(User.id).first()
            assert row and key_row and user
            ids = {
                "execution_id": execution_id,
                "row_id": str(row["id"]),
                "key_id": str(key_row["id"]),
                "user_id": str(user["id"]),
                "workflow_id": BFSI_WORKFLOW_ID,
            }
            yield server, Fixtures(ids=ids), browser.cookies
    finally:
        server.stop()


EDGES_BY_TYPE = {
    int: EDGE_INTS + EDGE_TEXT,
    UUID: ["00000000-0000-0000-0000-000000000000", *EDGE_TEXT],
    str: EDGE_DATES + EDGE_TEXT,
}


def edge_sweep(fixtures: Fixtures) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every edge value of its type in every query parameter of every route, one at a time,
    and each parameter given twice (a first good, a second bad value)."""
    sweep = []
    for route in ROUTES:
        path = route.path
        for name, kind in route.path_params.items():
            path = path.replace("{" + name + ":" + _converter(kind) + "}", fixtures.ids[name])
        for name, kind in route.query_params.items():
            for value in EDGES_BY_TYPE.get(kind, EDGE_TEXT):
                sweep.append((path, [(name, value)]))
            sweep.append((path, [(name, "1"), (name, "\x00")]))
    return sweep


@st.composite
def requests(draw: st.DrawFn, fixtures: Fixtures) -> tuple[str, list[tuple[str, str]], bool]:
    route = draw(st.sampled_from(WEIGHTED_ROUTES))
    path = route.path
    for name, kind in route.path_params.items():
        real = fixtures.ids[name]
        # A path parameter of type str takes garbage too (a uuid one would only be a 404).
        value = draw(st.one_of(st.just(real), TEXT.filter(bool))) if kind is str else real
        path = path.replace("{" + name + ":" + _converter(kind) + "}", quote(value, safe=""))
    # Few parameters at a time, so one refused value does not hide what another would do;
    # a name may repeat; sometimes one the handler does not know.
    names = sorted(route.query_params) or ["x"]
    params: list[tuple[str, str]] = []
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3)):
        params.append((name, draw(BY_TYPE.get(route.query_params.get(name, str), TEXT))))
    if draw(st.integers(0, 4)) == 0:
        params.append((draw(st.text(min_size=1, max_size=20)), draw(TEXT)))
    return path, params, draw(st.booleans())


def _converter(kind: type) -> str:
    return {UUID: "uuid", int: "int", str: "str"}[kind]


def test_the_routes_and_their_parameters_are_found() -> None:
    by_path = {route.path: route for route in ROUTES}
    assert by_path["/dashboard/executions"].query_params == {
        "status": str,
        "workflow": str,
        "api_key": str,
        "created_from": str,
        "created_to": str,
        "older": str,
        "newer": str,
    }
    assert by_path["/dashboard/approvals/{execution_id:uuid}"].query_params == {
        "editing": UUID,
        "show": str,
    }
    assert "/dashboard/workflows/{workflow_id:str}" in by_path
    assert len(ROUTES) >= 15


async def test_no_dashboard_get_answers_a_server_error(
    live_admin: tuple[LiveServer, Fixtures, httpx.Cookies],
) -> None:
    server, fixtures, cookies = live_admin
    failures: list[str] = []
    answered: dict[int, int] = {}

    with httpx.Client(base_url=server.url, cookies=cookies, timeout=30) as http:

        def check(path: str, params: list[tuple[str, str]], htmx: bool = False) -> None:
            headers = {"HX-Request": "true", "HX-Target": "executions-table"} if htmx else {}
            try:
                answer = http.get(path, params=params, headers=headers)
            except httpx.HTTPError as exc:
                failures.append(f"{path} {params!r}: no answer ({exc!r})")
                return
            answered[answer.status_code] = answered.get(answer.status_code, 0) + 1
            if answer.status_code >= 500:
                failures.append(f"{answer.status_code} for GET {path} {params!r} htmx={htmx}")

        sweep = edge_sweep(fixtures)
        for path, params in sweep:
            check(path, params)

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],  # every failure is collected, none shrunk
            suppress_health_check=list(HealthCheck),
        )
        @given(request=requests(fixtures))
        def fuzz(request: tuple[str, list[tuple[str, str]], bool]) -> None:
            check(*request)

        fuzz()
        # Still signed in at the end: the pass tested pages, not the sign-in redirect.
        assert http.get("/dashboard/executions").status_code == 200

    assert failures == [], "\n".join(failures)
    assert sum(answered.values()) >= len(sweep) + EXAMPLES * 0.9
    assert answered.get(200, 0) > EXAMPLES / 2, answered  # real pages were reached
