"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real supervisor.

Log in through the URL `web` prints, see the tasks and the timeline, run a task and watch its log arrive
live, pause and resume it, and check the tasks page fits a phone. On failure a screenshot of the page is
saved in the test's tmp folder. With TASKAUTOMATION_DOCS_SCREENSHOT=1 the tasks page is also saved as
docs/dashboard.png (the README's picture).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from tests.support.harness import SupervisorProcess
from tests.support.web_support import REPO, WebProcess, add_runs, make_task

from supervisor.model import Outcome

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[sync_api.Page]:
    if not shutil.which(CHROMIUM):  # a missing component fails loudly: .ci installs it (system-packages.txt)
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (listed in .ci/system-packages.txt)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()


def _quiet_window() -> str:
    """A one-minute window twelve hours away, so the task runs only when asked to."""
    at = datetime.now() + timedelta(hours=12)
    return (
        f"[Global]\nRunOnStartup = False\n[Frequency]\nEveryXMinutes = 60\n"
        f"AllowedFrom = {at:%H:%M}\nAllowedTo = {at:%H:%M}\n"
    )


def test_log_in_see_run_watch_pause_resume(
    home: Path, tmp_path: Path, browser_page: sync_api.Page, request: pytest.FixtureRequest
) -> None:
    page = browser_page
    gate = home / "gate"
    folder = make_task(
        home,
        "hello",
        main=(
            "import os, time\n"
            "def main():\n"
            "    print('step one <b>not bold</b>', flush=True)\n"
            f"    while not os.path.exists({str(gate)!r}):\n"
            "        time.sleep(0.05)\n"
            "    print('step two', flush=True)\n"
            "    return 'greeted'\n"
        ),
    )
    (folder / "config.ini").write_text(_quiet_window())
    # Two more tasks with a day of history, so the timeline and the sparklines have something to show.
    day_ago = datetime.now(timezone.utc) - timedelta(hours=23)
    for name, outcomes in (
        ("backup-photos", [Outcome.OK] * 9 + [Outcome.FAILED] + [Outcome.OK] * 6),
        ("check-feeds", [Outcome.OK, Outcome.TIMEOUT, Outcome.OK, Outcome.SKIPPED] * 5),
    ):
        make_task(home, name)
        (home / "Tasks" / name / "config.ini").write_text(_quiet_window())
        add_runs(home, name, list(outcomes), start=day_ago, step=timedelta(hours=22) / len(outcomes))
    try:
        with SupervisorProcess(home) as sup, WebProcess(home) as web:
            sup.wait_log("'hello'", timeout=60)
            page.goto(web.login_url)
            assert page.url == web.base + "/"
            row = page.locator("tr[data-task='hello']")
            sync_api.expect(row).to_be_visible()
            sync_api.expect(page.locator("svg.timeline")).to_be_visible()
            sync_api.expect(page.locator("svg.timeline text.lane-label", has_text="hello")).to_be_visible()

            # Run it and follow the flash link to the run page, where the log arrives live.
            sync_api.expect(row.locator(".state")).not_to_have_text("running")
            row.locator("button[data-action=run]").click()
            link = page.locator("#flash a", has_text="watch run")
            sync_api.expect(link).to_be_visible()
            link.click()
            log = page.locator("#log")
            sync_api.expect(log).to_contain_text("step one <b>not bold</b>")  # shown as text, not markup
            assert page.locator("#log b").count() == 0
            sync_api.expect(page.locator("#run-outcome")).to_have_text("running")
            gate.write_text("go")
            sync_api.expect(log).to_contain_text("step two")
            sync_api.expect(page.locator("#run-outcome")).to_have_text("ok")

            # Pause and resume from the tasks page.
            page.goto(web.base + "/")
            row = page.locator("tr[data-task='hello']")
            sync_api.expect(row.locator(".outcome")).to_have_text("ok")
            hello_lane = page.locator("svg.timeline a[href^='/runs/'] rect.o-ok")
            sync_api.expect(hello_lane.first).to_be_visible()
            if os.environ.get("TASKAUTOMATION_DOCS_SCREENSHOT") == "1":
                page.screenshot(path=str(REPO / "docs" / "dashboard.png"), full_page=True)
            row.locator("button[data-action=pause]").click()
            sync_api.expect(page.locator("#flash")).to_contain_text("paused")
            sync_api.expect(row.locator(".badge.paused")).to_be_visible()
            row.locator("button[data-action=resume]").click()
            sync_api.expect(page.locator("#flash")).to_contain_text("resumed")
            sync_api.expect(row.locator(".badge.paused")).to_have_count(0)

            # A phone: the table turns into cards and nothing forces sideways scrolling.
            page.set_viewport_size({"width": 390, "height": 844})
            page.reload()
            sync_api.expect(page.locator("tr[data-task='hello']")).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    except BaseException:
        page.screenshot(path=str(tmp_path / f"failure-{request.node.name}.png"), full_page=True)
        raise
