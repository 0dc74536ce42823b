"""The event browser in a real headless chromium: pages, live updates, timeline, filters,
tokens, and a big execution. Screenshots land in test-output/browser/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from playwright.async_api import expect

from eventlog.config import Settings

pytestmark = pytest.mark.browser
# What the store does not change is shown once, on SQLite; live updates, resuming and the big
# execution run on both stores.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def at(seconds: float) -> str:
    """A timestamp ``seconds`` after T0."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


# step -> (event type, worker, seconds after T0) of each of its events; the statuses follow
# from the event types (CONTRACT §4).
WORKFLOW: dict[str, list[tuple[str, str | None, float]]] = {
    "start": [("step.enter", "w-1", 0), ("step.exit", "w-1", 1.5)],
    "fetch_orders": [("step.enter", "w-1", 2), ("call.done", "w-2", 9), ("step.exit", "w-2", 14)],
    "transform": [("step.enter", "w-2", 15), ("call.started", "w-2", 25)],
    "load_warehouse": [("step.enter", "w-3", 16), ("command.failed", "w-3", 31)],
    "notify": [("step.enter", "w-1", 32), ("execution.cancelled", "w-1", 40)],
}
STEP_STATUS = {
    "start": "COMPLETED",
    "fetch_orders": "COMPLETED",
    "transform": "RUNNING",
    "load_warehouse": "FAILED",
    "notify": "CANCELLED",
}


def workflow(execution_id: int) -> list[dict[str, Any]]:
    """The events of a small workflow with one step of each status, in time order."""
    events = [
        {
            "execution_id": str(execution_id),
            "step": step,
            "event_type": kind,
            "worker_id": worker,
            "created_at": at(seconds),
            "payload": {"step": step, "rows": int(seconds * 7), "big": 2**63 - 1},
            "meta": {"attempt": 1},
        }
        for step, kinds in WORKFLOW.items()
        for kind, worker, seconds in kinds
    ]
    return sorted(events, key=lambda e: e["created_at"])


@SQLITE_ONLY
async def test_each_page_loads_with_no_console_errors(service, screen, screen_factory):
    """/, /executions/{id} and /events load, show their data, and log no error or warning;
    the execution page also in the dark scheme."""
    await service.post(workflow(7001), batch=True)
    await service.post(workflow(7002), batch=True)
    page = screen.page
    await page.goto(service.url("/"))
    await page.wait_for_selector("tr[data-execution-id='7002']")
    await expect(page.locator("tbody tr")).to_have_count(2)
    await screen.shot("executions")
    await page.goto(service.url("/executions/7002"))
    await page.wait_for_selector("body[data-loaded='11']")
    await page.click(".vrow[data-event-id] >> nth=3")
    await page.wait_for_selector(".inspector .json")
    await screen.shot("execution")
    await page.goto(service.url("/events"))
    await page.wait_for_selector(".vrow[data-event-id]")
    await screen.shot("events")
    assert screen.errors == []
    dark = await screen_factory(color_scheme="dark")
    await dark.page.goto(service.url("/executions/7002"))
    await dark.page.wait_for_selector("body[data-loaded='11']")
    await dark.page.click(".vrow[data-event-id] >> nth=8")
    await dark.shot("execution-dark")
    assert dark.errors == []


def ms(timestamp: str) -> float:
    """An API timestamp as Unix milliseconds."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000


async def test_a_posted_event_is_on_the_execution_page_and_the_index_within_a_second(
    service, screen_factory
):
    """From its commit (ingested_at) to the screen: the new event's row on the open execution
    page, the new execution's row on /, each within one second."""
    await service.post(workflow(7101), batch=True)
    execution = await screen_factory()
    index = await screen_factory()
    await execution.page.goto(service.url("/executions/7101"))
    await execution.page.wait_for_selector("body[data-loaded='11']")
    await index.page.goto(service.url("/"))
    await index.page.wait_for_selector("tr[data-execution-id='7101']")
    await execution.page.wait_for_selector(".live[data-state='live']")
    await index.page.wait_for_selector(".live[data-state='live']")

    async def committed(body: dict[str, Any]) -> float:
        event_id = (await service.post(body))["event_id"]
        stored = await service.get(f"/api/events/{event_id}?execution_id={body['execution_id']}")
        return ms(stored["ingested_at"])

    latencies = {}
    for round_ in range(3):
        step = f"late_{round_}"
        on_page, on_index = (
            f".tl-label[data-step='{step}']",
            f"tr[data-execution-id='7102'][data-count='{round_ + 1}']",
        )
        await execution.arm(on_page)
        await index.arm(on_index)
        first = await committed({"execution_id": "7101", "event_type": "step.enter", "step": step})
        second = await committed({"execution_id": "7102", "event_type": "step.enter", "step": step})
        latencies[round_] = (
            await execution.seen_at(on_page) - first,
            await index.seen_at(on_index) - second,
        )
    print("commit to screen, ms (execution page, index):", latencies)
    for execution_ms, index_ms in latencies.values():
        assert 0 <= execution_ms < 1000 and 0 <= index_ms < 1000, latencies
    counts = await index.page.locator("tr[data-execution-id='7101'] td.num").first.inner_text()
    assert counts == "14"
    assert execution.errors == [] and index.errors == []


@SQLITE_ONLY
async def test_the_timeline_has_one_row_per_step_coloured_by_status(service, screen):
    """One row per step in the order the steps began, each bar in its status's colour; the
    failed step stands out."""
    await service.post(workflow(7201), batch=True)
    page = screen.page
    await page.goto(service.url("/executions/7201"))
    await page.wait_for_selector("body[data-loaded='11']")
    labels = page.locator(".tl-label")
    assert await labels.evaluate_all("ls => ls.map(l => l.dataset.step)") == list(WORKFLOW)
    assert await labels.evaluate_all("ls => ls.map(l => l.dataset.status)") == [
        STEP_STATUS[s] for s in WORKFLOW
    ]
    assert await page.locator(".tl-label.failed").evaluate_all(
        "ls => ls.map(l => l.dataset.step)"
    ) == ["load_warehouse"]
    await screen.shot("timeline")
    assert screen.errors == []  # (before the readback below, which chromium warns about)
    # The bar's colour, read off the canvas in the middle of each step's span.
    found = await page.evaluate(_BAR_COLOURS)
    for step, status in STEP_STATUS.items():
        assert found[step]["pixel"] == found[step]["expected"][status.lower()], (step, found)


@SQLITE_ONLY
async def test_hovering_a_mark_shows_its_event_and_clicking_inspects_it(service, screen):
    """The mark of load_warehouse's failure: hovered, a tooltip names it; clicked, the
    inspector shows its payload, and the list selects it."""
    await service.post(workflow(7251), batch=True)
    page = screen.page
    await page.goto(service.url("/executions/7251"))
    await page.wait_for_selector("body[data-loaded='11']")
    x, y = await page.evaluate(_MARK, "load_warehouse")
    await page.mouse.move(x, y)
    tip = page.locator(".tl-tip")
    await expect(tip).to_be_visible()
    await expect(tip).to_contain_text("command.failed")
    await expect(tip).to_contain_text("FAILED · load_warehouse")
    await page.mouse.click(x, y)
    await expect(page.locator(".inspector-head h2")).to_have_text("command.failed")
    await expect(page.locator(".inspector .json").first).to_contain_text('"load_warehouse"')
    await expect(page.locator(".vrow.selected .c-type")).to_have_text("command.failed")
    await page.mouse.move(x, y + 1)
    await screen.shot("timeline-hover")
    assert screen.errors == []


# Where on the page the last mark of a step's row is drawn.
_MARK = """(step) => {
  const timeline = window.eventlogTimeline, times = timeline.byName.get(step).times;
  const box = document.querySelector('.tl-canvas').getBoundingClientRect();
  const row = document.querySelector(`.tl-label[data-step='${step}']`).getBoundingClientRect();
  return [box.left + timeline.x(times[times.length - 1]), row.top + row.height / 2];
}"""


_BAR_COLOURS = """() => {
  const canvas = document.querySelector('.tl-canvas');
  const ctx = canvas.getContext('2d');
  const style = getComputedStyle(document.documentElement);
  const rgb = (name) => {
    const probe = document.createElement('canvas').getContext('2d');
    probe.fillStyle = style.getPropertyValue(name).trim();
    probe.fillRect(0, 0, 1, 1);
    return Array.from(probe.getImageData(0, 0, 1, 1).data.slice(0, 3));
  };
  const expected = {};
  for (const s of ['running', 'completed', 'failed', 'cancelled']) expected[s] = rgb(`--st-${s}-bar`);
  const box = canvas.getBoundingClientRect();
  const ratio = canvas.width / box.width;
  const out = {};
  for (const label of document.querySelectorAll('.tl-label')) {
    const step = label.dataset.step;
    const row = label.getBoundingClientRect();
    const y = (row.top + row.height / 2 - box.top) * ratio;
    // the middle of the step's first and second mark (the bar, between marks)
    const timeline = window.eventlogTimeline, times = timeline.byName.get(step).times;
    const x = timeline.x((times[0] + times[1]) / 2) * ratio;
    out[step] = { pixel: Array.from(ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data.slice(0, 3)), expected };
  }
  return out;
}"""


@SQLITE_ONLY
async def test_filters_narrow_the_list_show_counts_and_survive_a_reload(service, screen):
    """Choosing a step and a worker narrows the list; the options count what they would keep;
    the choice is in the URL and still applied after a reload; arrow keys walk the list."""
    await service.post(workflow(7301), batch=True)
    page = screen.page
    await page.goto(service.url("/executions/7301"))
    await page.wait_for_selector("body[data-loaded='11']")
    await expect(page.locator(".vrow[data-event-id]")).to_have_count(11)
    options = await page.locator("#filter-step option").all_inner_texts()
    assert options[0] == "All steps (11)" and "fetch_orders (3)" in options
    await page.select_option("#filter-step", "fetch_orders")
    await expect(page.locator(".vrow[data-event-id]")).to_have_count(3)
    assert "worker_id" not in page.url and "step=fetch_orders" in page.url
    workers = await page.locator("#filter-worker_id option").all_inner_texts()
    assert workers == ["All workers (3)", "w-2 (2)", "w-1 (1)"]
    await page.select_option("#filter-worker_id", "w-2")
    await expect(page.locator(".vrow[data-event-id]")).to_have_count(2)
    await expect(page.locator(".filter-count")).to_have_text("2 of 11 events")
    await page.reload()
    await page.wait_for_selector("body[data-loaded='11']")
    await expect(page.locator(".vrow[data-event-id]")).to_have_count(2)
    assert await page.input_value("#filter-step") == "fetch_orders"
    assert await page.input_value("#filter-worker_id") == "w-2"
    steps = await page.locator(".vrow[data-event-id] .c-step").all_inner_texts()
    assert steps == ["fetch_orders", "fetch_orders"]
    await screen.shot("execution-filtered")
    # keyboard: focus the list, arrow down selects the first event and opens it
    await page.focus(".vbody")
    await page.keyboard.press("ArrowDown")
    await page.wait_for_selector(".inspector-head h2")
    await expect(page.locator(".inspector-head h2")).to_have_text("call.done")
    assert "#event-" in page.url
    await page.click("text=Clear filters")
    await expect(page.locator(".vrow[data-event-id]")).to_have_count(11)
    assert "step=" not in page.url
    assert screen.errors == []


@SQLITE_ONLY
async def test_an_event_link_opens_that_event(service, screen):
    """/executions/{id}#event-<id> opens with that event selected and inspected."""
    reply = await service.post(workflow(7401), batch=True)
    target = reply["event_ids"][6]
    page = screen.page
    await page.goto(service.url(f"/executions/7401#event-{target}"))
    await page.wait_for_selector(f".vrow.selected[data-event-id='{target}']")
    inspected = await page.locator(".inspector .fields dd").first.inner_text()
    assert inspected == target
    assert screen.errors == []


async def test_a_dropped_stream_resumes_with_no_gap_and_no_repeat(service, screen):
    """Events written while the page's stream is down all show once it is back, once each."""
    await service.post(workflow(7501), batch=True)
    page = screen.page
    await page.goto(service.url("/executions/7501"))
    await page.wait_for_selector(".live[data-state='live']")
    await page.evaluate("window.eventlogStream.drop()")
    for i in range(5):
        await service.post({"execution_id": "7501", "event_type": "tick", "step": f"s{i}"})
    await expect(page.locator(".vrow[data-event-id]")).to_have_count(16)
    await page.wait_for_selector(".live[data-state='live']")
    ids = await page.locator(".vrow[data-event-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.eventId)"
    )
    assert len(ids) == len(set(ids)) == 16
    await expect(page.locator(".filter-count")).to_have_text("16 events")


async def test_the_feed_shows_new_events_and_holds_them_while_paused(service, screen):
    """/events shows events as they come; paused, it holds new ones and shows them on resume."""
    await service.post(workflow(7601), batch=True)
    page = screen.page
    await page.goto(service.url("/events"))
    await expect(page.locator(".vrow[data-event-id]")).to_have_count(11)
    await page.wait_for_selector(".live[data-state='live']")
    await page.click("button:has-text('Pause')")
    await service.post({"execution_id": "7602", "event_type": "step.enter", "step": "held"})
    await page.wait_for_selector("button:has-text('Resume (1 new)')")
    await expect(page.locator(".vrow[data-event-id]")).to_have_count(11)
    await page.click("button:has-text('Resume')")
    await page.wait_for_selector(".vrow .c-step:has-text('held')")
    first = await page.locator(".vrow[data-event-id] .c-step").first.inner_text()
    assert first == "held"  # newest first
    await page.select_option("#filter-step", "held")
    await expect(page.locator(".vrow[data-event-id]")).to_have_count(1)
    assert screen.errors == []


@SQLITE_ONLY
async def test_times_switch_between_utc_and_local(service, screen_factory):
    """The zone toggle shows local times (here Asia/Tokyo, UTC+9) and is remembered."""
    await service.post(workflow(7701), batch=True)
    screen = await screen_factory(timezone_id="Asia/Tokyo")
    page = screen.page
    await page.goto(service.url("/"))
    cell = page.locator("tr[data-execution-id='7701'] td").nth(3)
    assert await cell.inner_text() == "2026-12-01 09:30:00.000"
    await page.click("button:has-text('Times: UTC')")
    assert await cell.inner_text() == "2026-12-01 18:30:00.000"
    await page.reload()
    await page.wait_for_selector("tr[data-execution-id='7701']")
    assert await cell.inner_text() == "2026-12-01 18:30:00.000"


@pytest.fixture
def token_settings(settings: Settings) -> Settings:
    """Tokens on: a write token for the test's posts, a read token for the reader."""
    return Settings(dsn=settings.dsn, write_tokens=["writer-secret"], read_tokens=["reader-ok"])


@SQLITE_ONLY
async def test_the_token_prompt_accepts_a_read_token_refuses_a_wrong_one_and_asks_once(
    service_factory, token_settings, screen
):
    """With tokens on, the page asks for one; a wrong token is refused in the dialog; the right
    one loads the data, is kept in sessionStorage, never in a URL, and is not asked again."""
    service = await service_factory(token_settings, token="writer-secret")
    await service.post(workflow(7801), batch=True)
    page = screen.page
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    await page.goto(service.url("/"))
    dialog = page.locator("dialog.token-dialog")
    await dialog.wait_for()
    await screen.shot("token-prompt")
    await page.fill("#token-input", "wrong-token")
    await page.click("dialog button[type=submit]")
    await page.wait_for_selector("dialog .dialog-error:has-text('refused')")
    assert await page.evaluate("sessionStorage.getItem('eventlog.token')") is None
    await page.fill("#token-input", "reader-ok")
    await page.click("dialog button[type=submit]")
    await page.wait_for_selector("tr[data-execution-id='7801']")
    assert await page.evaluate("sessionStorage.getItem('eventlog.token')") == "reader-ok"
    await page.click("a:has-text('7801')")
    await page.wait_for_selector("body[data-loaded='11']")
    assert await dialog.count() == 0  # asked once
    assert not any("reader-ok" in u or "wrong-token" in u for u in urls)


@SQLITE_ONLY
async def test_pages_work_under_a_mount_prefix(service_factory, settings, screen):
    """Mounted at /el in a host app, the pages load their assets and data under /el."""
    service = await service_factory(settings, prefix="/el")
    await service.post(workflow(7901), batch=True)
    page = screen.page
    await page.goto(service.url("/"))
    await page.wait_for_selector("tr[data-execution-id='7901']")
    await page.click("a:has-text('7901')")
    await page.wait_for_selector("body[data-loaded='11']")
    assert page.url.endswith("/el/executions/7901")
    await page.click("nav a:has-text('Live feed')")
    await page.wait_for_selector(".vrow[data-event-id]")
    assert page.url.endswith("/el/events")
    assert screen.errors == []


async def test_ten_thousand_events_render_within_a_second(service, screen):
    """A 10,000-event execution is laid out and painted (list, filters and timeline) in under a
    second of the page's own time; the time from navigation, fetching included, is printed."""
    steps = [f"step_{i:02d}" for i in range(40)]
    events = [
        {
            "execution_id": "8001",
            "step": steps[i % 40],
            "event_type": "command.failed" if i % 997 == 0 else "call.done",
            "worker_id": f"w-{i % 8}",
            "created_at": at(i * 0.05),
            "payload": {"i": i, "rows": [i, i + 1]},
        }
        for i in range(10_000)
    ]
    await service.post(events, batch=True)
    page = screen.page
    timings = []
    for _ in range(3):
        await page.goto(service.url("/executions/8001"))
        await page.wait_for_selector("body[data-loaded='10000']", timeout=15000)
        timings.append(
            await page.evaluate(
                "[+document.body.dataset.renderMs, +document.body.dataset.loadedMs]"
            )
        )
    print("10,000 events: [render ms, on screen ms after navigation]:", timings)
    await expect(page.locator(".filter-count")).to_have_text("10,000 events")
    await expect(page.locator(".tl-label")).to_have_count(40)
    await screen.shot("execution-10k")
    assert sorted(t[0] for t in timings)[1] <= 1000, timings
    assert screen.errors == []


@SQLITE_ONLY
async def test_export_saves_the_executions_events_as_ndjson(service, screen):
    """Export NDJSON saves every event as the API returns it, one per line, in commit order,
    with integers past 2^53 kept digit for digit."""
    await service.post(workflow(8101), batch=True)
    page = screen.page
    await page.goto(service.url("/executions/8101"))
    await page.wait_for_selector("body[data-loaded='11']")
    async with page.expect_download() as info:
        await page.click("button:has-text('Export NDJSON')")
    download = await info.value
    assert download.suggested_filename == "execution-8101.ndjson"
    text = (await download.path()).read_text()
    assert text.count('"big":9223372036854775807') == 11
    stored = await service.get("/api/executions/8101/events?limit=100")
    assert [orjson.loads(line) for line in text.splitlines()] == stored["events"]


async def test_an_execution_without_events_waits_for_its_first(service, screen):
    """An execution page opened before its first event says so, without an error, and shows
    the event when it comes."""
    page = screen.page
    await page.goto(service.url("/executions/8201"))
    await page.wait_for_selector("body[data-loaded='0']")
    await page.wait_for_selector(".live[data-state='live']")
    await expect(page.locator(".notice")).to_contain_text("No events for this execution yet")
    await service.post({"execution_id": "8201", "event_type": "step.enter", "step": "first"})
    await page.wait_for_selector(".tl-label[data-step='first']")
    await expect(page.locator(".summary-status .pill")).to_have_text("RUNNING")
    assert screen.errors == []


@SQLITE_ONLY
async def test_the_index_pages_through_executions_and_finds_one_by_id(service, screen):
    """120 executions: three pages of 50, 50 and 20, newest first, none twice; typing narrows
    the page, Enter opens the execution, on this page or not."""
    await service.post(
        [{"execution_id": 9000 + i, "event_type": "step.enter", "step": "s"} for i in range(120)],
        batch=True,
    )
    page = screen.page
    await page.goto(service.url("/"))
    seen: list[str] = []
    for size in (50, 50, 20):
        await expect(page.locator("tbody tr")).to_have_count(size)
        seen += await page.locator("tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.executionId)"
        )
        if size == 50:
            await page.click("a:has-text('Older')")
    assert seen == [str(9000 + i) for i in reversed(range(120))]
    await expect(page.locator("a:has-text('Older')")).to_have_count(0)
    await page.click("a:has-text('Newest')")
    await page.fill("#search", "9111")
    await expect(page.locator("tbody tr")).to_have_count(1)
    await page.fill("#search", "9011")  # on the third page: Enter finds it all the same
    await expect(page.locator("tbody tr")).to_have_count(0)
    await page.press("#search", "Enter")
    await page.wait_for_url("**/executions/9011")
    await page.wait_for_selector("body[data-loaded='1']")
    assert screen.errors == []
