"""The review screen in a real browser (issue #15, section 5): a 100-row execution cleared by
keyboard alone, focus after each decision, the cards at 390 px, and axe-core on every dashboard
page at 1280 px and 390 px. The page fixture fails each test on a JavaScript error or anything
the Content-Security-Policy blocked. `FLOWGATE_UPDATE_SCREENSHOTS=1` saves the README's
review.png and review-390.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from playwright.async_api import Browser, Page, expect

from tests import factories
from tests.browser.conftest import VIEWPORT
from tests.factories import row_states, rows
from tests.live_server import LiveServer
from web.domain import approvals, approvers
from web.domain.actors import Actor
from web.domain.tables import SandboxMessage

AXE = (Path(__file__).parent / "vendor" / "axe-4.11.0.min.js").read_text(encoding="utf-8")
PHONE = {"width": 390, "height": 844}
# Each page's serious and critical violations, a few nodes each, as readable lines.
AXE_RUN = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => v.id + " (" + v.impact + "): " + v.nodes.length + " nodes, e.g. "
      + v.nodes.slice(0, 3).map((n) => n.target.join(" ") + " " + n.failureSummary).join(" | "));
}"""
# Pixels scrolled on this document, whichever way: added up by a scroll listener.
COUNT_SCROLLING = """
window.__scrolled = 0;
let __lastY = window.scrollY;
window.addEventListener("scroll", () => {
  window.__scrolled += Math.abs(window.scrollY - __lastY);
  __lastY = window.scrollY;
}, { passive: true });
"""
EDITS = {
    17: "Dear Priya, a personal loan at a special rate is ready for you. Reply STOP to opt out.",
    64: "Dear Arjun, build your credit with our secured card. Reply STOP to opt out.",
}
REJECTS = (5, 40, 88)


async def waiting_for_approval(
    api: httpx.AsyncClient, secret: str, run_worker: Any, csv_data: list[dict[str, Any]]
) -> str:
    execution_id = await factories.start(api, secret, csv_data=csv_data)
    await run_worker()
    return execution_id


async def axe_violations(page: Page) -> list[str]:
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        # Through the DevTools protocol, not a <script>: the page's CSP stays as strict.
        await page.evaluate(AXE)
    found: list[str] = await page.evaluate(AXE_RUN)
    return found


class Counter:
    """Key presses (commands and typed characters apart), page loads and pixels scrolled."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.keys = 0
        self.typed = 0
        self.loads = 0
        self.scrolled = 0
        page.on("load", self._loaded)

    def _loaded(self, _: Any) -> None:
        self.loads += 1

    async def press(self, key: str) -> None:
        self.keys += 1
        await self.page.keyboard.press(key)

    async def type(self, text: str) -> None:
        self.typed += len(text)
        await self.page.keyboard.type(text)

    async def add_scrolling(self) -> None:
        """Before this document goes: what it scrolled."""
        self.scrolled += int(await self.page.evaluate("window.__scrolled || 0"))


async def focused_row(page: Page) -> str | None:
    found: str | None = await page.evaluate(
        "(document.activeElement.closest('tr.review-row') || {}).id || null"
    )
    return found


async def rows_on_screen(page: Page) -> int:
    """Rows wholly visible below the sticky bar."""
    count: int = await page.evaluate(
        """() => {
      const top = document.querySelector('.review-bar').getBoundingClientRect().bottom;
      return [...document.querySelectorAll('tr.review-row')].filter((row) => {
        const box = row.getBoundingClientRect();
        return box.top >= top && box.bottom <= window.innerHeight;
      }).length;
    }"""
    )
    return count


async def test_a_reviewer_clears_100_rows_with_2_edits_and_3_rejects_by_keyboard_alone(
    reviewer_page: Page,
    live_server: LiveServer,
    api: httpx.AsyncClient,
    run_worker: Any,
    screenshots: Path,
) -> None:
    page = reviewer_page
    key = await factories.create_key(name="Acme Bank website")
    execution_id = await waiting_for_approval(api, key.secret, run_worker, rows(100))
    ids = [str(r["id"]) for r in await row_states(execution_id)]
    await page.context.add_init_script(COUNT_SCROLLING)
    counter = Counter(page)
    await page.goto(f"/dashboard/approvals/{execution_id}")
    await expect(page.locator("tr.review-row")).to_have_count(100)

    async def expect_focus(index: int) -> None:
        await expect(page.locator(f"#row-{ids[index]}")).to_be_focused()

    await counter.press("?")  # the keys, listed
    await expect(page.locator("#review-keys dl")).to_be_visible()
    await counter.press("?")
    await counter.press("j")
    await expect_focus(0)
    undone = False
    for index in range(100):
        await expect_focus(index)
        row = page.locator(f"#row-{ids[index]}")
        if index in EDITS:
            await counter.press("e")
            textarea = row.locator("textarea")
            await expect(textarea).to_be_focused()
            await counter.press("Control+a")
            await counter.type(EDITS[index])
            await counter.press("Control+Enter")
            await expect(row.locator("textarea")).to_have_count(0)
            await expect(row.locator(".badge-edited")).to_be_visible()
            await expect_focus(index)  # an edit keeps the row: it still needs its decision
        if index in REJECTS:
            await counter.press("r")
        else:
            await counter.press("a")
        if index == 30 and not undone:  # a slip, taken back with `u`
            await expect_focus(31)
            await counter.press("u")
            await expect(row).to_have_attribute("data-decision", "")
            await expect_focus(30)
            await counter.press("a")
            undone = True
        if index < 99:
            await expect_focus(index + 1)  # focus moved on to the next undecided row
        if index == 19:
            on_screen = await rows_on_screen(page)
            print(f"\nrows wholly on a 1280x800 screen below the sticky bar: {on_screen}")
            assert on_screen >= 15
            await page.screenshot(path=screenshots / "review.png")
            assert (screenshots / "review.png").stat().st_size < 400_000
    outcome = page.locator("#review-outcome")
    await expect(outcome).to_have_text("97 will be sent, 0 skipped for compliance, 3 rejected")
    await expect(page.locator(".tab-undecided .count")).to_have_text("0")

    await counter.press("s")
    await expect(page.locator("#review-submit")).to_be_focused()
    await counter.add_scrolling()
    await counter.press("Enter")
    await expect(page.get_by_role("heading", name="Send the approved messages?")).to_be_visible()
    await expect(page.get_by_label("Comment")).to_be_focused()
    await counter.type("Cleared by keyboard")
    await counter.press("Tab")
    await expect(page.get_by_role("button", name="Send 97 messages")).to_be_focused()
    await counter.add_scrolling()
    await counter.press("Enter")
    await expect(page).to_have_url(f"{live_server.url}/dashboard/executions/{execution_id}")
    print(
        f"cleared 100 rows (2 edits, 3 rejects, 1 undo) with {counter.keys} key presses "
        f"(+{counter.typed} characters typed), {counter.loads} page loads, "
        f"{counter.scrolled} px scrolled"
    )

    await run_worker()
    states = await row_states(execution_id)
    assert [i for i, r in enumerate(states) if r["decision"] == "rejected"] == list(REJECTS)
    assert [r["decision"] for r in states].count("approved") == 97
    assert {r["decided_by"] for r in states} == {"reviewer@example.com"}
    assert [i for i, r in enumerate(states) if r["original_content"]] == list(EDITS)
    for index, text in EDITS.items():
        assert states[index]["generated_content"] == text
        sent = await SandboxMessage.select(SandboxMessage.body).where(
            SandboxMessage.execution_row == UUID(ids[index])
        )
        assert sent == [{"body": text}]
    assert [r["send_status"] for r in states].count("sent") == 97
    assert await SandboxMessage.count() == 97
    stored = await factories.execution_row(execution_id)
    assert (stored["status"], stored["approval_comment"]) == ("completed", "Cleared by keyboard")


async def test_focus_moves_to_the_next_undecided_row_after_a_decision(
    reviewer_page: Page, api: httpx.AsyncClient, run_worker: Any
) -> None:
    page = reviewer_page
    data = rows(5)
    data[1]["phone"] = "555"  # failing: it needs no decision, so focus passes it by
    key = await factories.create_key()
    execution_id = await waiting_for_approval(api, key.secret, run_worker, data)
    ids = [str(r["id"]) for r in await row_states(execution_id)]
    await page.goto(f"/dashboard/approvals/{execution_id}")
    await page.locator(f"#row-{ids[3]}").get_by_role("button", name="Approve").click()
    await expect(page.locator(f"#row-{ids[4]}")).to_be_focused()  # after a click too

    await page.locator(f"#row-{ids[0]}").get_by_role("button", name="Reject").click()

    await expect(page.locator(f"#row-{ids[2]}")).to_be_focused()  # 1 fails, 3 is decided
    announced = page.locator("#review-announcer")
    await expect(announced).to_have_text("Row 3, Arjun Mehta: undecided")
    # The failing row: no Approve button, and `a` only says why.
    failing = page.locator(f"#row-{ids[1]}")
    await expect(failing.get_by_role("button", name="Approve")).to_have_count(0)
    await page.keyboard.press("k")
    await expect(failing).to_be_focused()
    await page.keyboard.press("a")
    await expect(announced).to_have_text("This row cannot be approved: it will be skipped")
    # Keys do nothing while typing in a field.
    await page.keyboard.press("e")
    textarea = failing.locator("textarea")
    await expect(textarea).to_be_focused()
    await page.keyboard.type("ja")
    await expect(textarea).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(failing.locator("textarea")).to_have_count(0)
    await expect(failing).to_be_focused()
    assert [r["decision"] for r in await row_states(execution_id)] == [
        "rejected",
        None,
        None,
        "approved",
        None,
    ]


async def test_at_390_px_rows_are_cards_with_their_decision_buttons_on_screen(
    reviewer_page: Page, api: httpx.AsyncClient, run_worker: Any, screenshots: Path
) -> None:
    page = reviewer_page
    await page.set_viewport_size(PHONE)
    key = await factories.create_key(name="Acme Bank website")
    data = rows(8)
    data[2]["phone"] = "555"
    execution_id = await waiting_for_approval(api, key.secret, run_worker, data)
    ids = [str(r["id"]) for r in await row_states(execution_id)]
    await page.goto(f"/dashboard/approvals/{execution_id}")
    await page.locator(f"#row-{ids[1]}").get_by_role("button", name="Reject").click()
    await expect(page.locator(f"#row-{ids[1]} .badge-rejected")).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    for index in (0, 1, 7):
        row = page.locator(f"#row-{ids[index]}")
        names = ["Approve", "Reject", "Edit"] if index != 1 else ["Approve", "Clear", "Edit"]
        for name in names:
            control = row.get_by_role("link" if name == "Edit" else "button", name=name)
            await control.scroll_into_view_if_needed()
            box = await control.bounding_box()
            assert box is not None, (index, name)
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (index, name, box)
            assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], (index, name)
            assert box["height"] >= 30, (index, name, box)  # big enough for a thumb
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=screenshots / "review-390.png")
    assert (screenshots / "review-390.png").stat().st_size < 400_000


async def test_every_dashboard_page_passes_axe_at_1280_and_390_px(
    admin_page: Page,
    browser: Browser,
    live_server: LiveServer,
    api: httpx.AsyncClient,
    run_worker: Any,
) -> None:
    page = admin_page
    key = await factories.create_key(name="Acme Bank website")
    data = rows(6)
    data[1]["phone"] = "555"
    execution_id = await waiting_for_approval(api, key.secret, run_worker, data)
    first = (await row_states(execution_id))[0]
    someone = approvers.Approver(Actor.user(None, "x@y", user_agent=None))
    await approvals.edit_row(
        UUID(execution_id), first["id"], "Dear John, a new offer. Reply STOP to opt out.", someone
    )
    await approvals.decide_row(UUID(execution_id), first["id"], "rejected", "", someone)
    pages = [
        "/dashboard/executions",
        f"/dashboard/executions/{execution_id}",
        "/dashboard/approvals",
        f"/dashboard/approvals/{execution_id}",
        f"/dashboard/approvals/{execution_id}?show=failing",
        "/dashboard/keys",
        f"/dashboard/keys/{key.id}",
        "/dashboard/keys/new",
        f"/dashboard/keys/{key.id}/edit",
        "/dashboard/users",
        "/dashboard/users/new",
        "/dashboard/workflows",
        "/dashboard/workflows/workflow_bfsi_marketing_template",
        "/dashboard/no-such-page",
    ]
    failures: dict[str, list[str]] = {}
    for viewport in (VIEWPORT, PHONE):
        await page.set_viewport_size(viewport)
        for url in pages:
            await page.goto(url)
            found = await axe_violations(page)
            if found:
                failures[f"{url} at {viewport['width']} px"] = found
        # The review screen with a row open for editing, and the confirmation pages.
        review = f"/dashboard/approvals/{execution_id}"
        await page.goto(review)
        await page.locator("a.edit").first.click()
        await expect(page.locator(".edit-form textarea")).to_be_focused()
        for name, found in (
            ("editing a row", await axe_violations(page)),
            ("submit confirmation", await _confirmation(page, review, "Submit…")),
            (
                "reject confirmation",
                await _confirmation(page, review, "Reject the whole execution…"),
            ),
        ):
            if found:
                failures[f"{name} at {viewport['width']} px"] = found

    # The sign-in form, signed out.
    for viewport in (VIEWPORT, PHONE):
        context = await browser.new_context(base_url=live_server.url, viewport=viewport)
        signed_out = await context.new_page()
        await signed_out.goto("/dashboard/login")
        found = await axe_violations(signed_out)
        if found:
            failures[f"/dashboard/login at {viewport['width']} px"] = found
        await context.close()
    assert failures == {}, json.dumps(failures, indent=1)


async def _confirmation(page: Page, review: str, button: str) -> list[str]:
    await page.goto(review)
    await page.get_by_role("button", name=button).click()
    await expect(page.get_by_label("Comment")).to_be_visible()
    return await axe_violations(page)
