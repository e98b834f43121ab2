"""Prometheus metrics with the real parts: the dashboard's ``/metrics`` and who may read it, ``taskautomation
metrics`` (stdout and ``--textfile``), ``promtool check metrics`` on both outputs, counters across a real
supervisor's pruning and restarts, and a real Prometheus server scraping a real dashboard."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support.harness import SupervisorProcess, cli
from tests.support.helpers import wait_for
from tests.support.receivers import free_port
from tests.support.web_support import TOKEN, WebProcess, add_runs, make_task

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from supervisor.config.listen import parse_listen
from supervisor.model import Outcome
from supervisor.paths import Paths
from supervisor.web.app import WebConfig, create_app

pytestmark = pytest.mark.timeout(180)
METRICS_TOKEN = "scrape-" + "s" * 40
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _needs(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.skip(f"{tool} is not installed (Debian package prometheus; bash scripts/system-deps.sh)")
    return found


def _value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in:\n{text[:3000]}")


def _promtool(text: str) -> None:
    checked = subprocess.run(
        [_needs("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ------------------------------------------------------------------------------------------ who may read
def test_metrics_answer_to_the_dashboard_token_and_the_metrics_token_only_there(home: Path) -> None:
    make_task(home, "a")
    add_runs(home, "a", [Outcome.OK, Outcome.FAILED])
    app = create_app(
        WebConfig(paths=Paths(home), listen=parse_listen("127.0.0.1:8765"), token=TOKEN, metrics_token=METRICS_TOKEN)
    )
    c = TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False)
    refused = c.get("/metrics")
    assert refused.status_code == 401 and "Bearer" in refused.json()["error"]  # a scraper gets a status, not a page
    assert c.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    for token in (TOKEN, METRICS_TOKEN):
        r = c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.headers["content-type"] == CONTENT_TYPE
        assert _value(r.text, "taskautomation_runs_total", task="a", outcome="failed") == 1
    # Compressed for a scraper that accepts it (Prometheus does), plain otherwise: the same text.
    headers = {"Authorization": f"Bearer {TOKEN}"}
    packed = c.get("/metrics", headers={**headers, "Accept-Encoding": "gzip"})
    plain = c.get("/metrics", headers={**headers, "Accept-Encoding": "identity"})
    assert packed.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert packed.text == plain.text  # httpx decodes the gzip body
    # The scrape secret reads metrics and nothing else.
    scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert c.get("/api/status", headers=scraper).status_code == 401
    assert c.post("/api/tasks/a/run", headers=scraper).status_code == 401
    assert c.get("/", headers=scraper).status_code == 303


# -------------------------------------------------------------------------------- both outputs, promtool
def test_http_and_textfile_give_the_same_exposition_and_promtool_accepts_both(home: Path) -> None:
    _needs("promtool")
    make_task(home, "a")
    make_task(home, 'odd "name"')  # a name that needs escaping in a label
    add_runs(home, "a", [Outcome.OK, Outcome.OK, Outcome.TIMEOUT, None])
    textfile = home / "out" / "taskautomation.prom"
    textfile.parent.mkdir()
    with WebProcess(home) as web:
        r = httpx.get(f"{web.base}/metrics", headers={"Authorization": f"Bearer {web.token}"}, timeout=30)
        assert r.status_code == 200, r.text
        written = cli(home, "metrics", "--textfile", str(textfile))
        assert written.returncode == 0 and written.stdout == "" and written.stderr == "", written
        printed = cli(home, "metrics")
    assert printed.returncode == 0, printed.stderr
    assert r.text == textfile.read_text() == printed.stdout  # no supervisor: the same offline figures
    assert os.stat(textfile).st_mode & 0o777 == 0o644
    assert [p.name for p in textfile.parent.iterdir()] == ["taskautomation.prom"]  # no temporary file left
    for text in (r.text, textfile.read_text()):
        _promtool(text)
    assert _value(r.text, "taskautomation_runs_total", task="a", outcome="ok") == 2
    assert _value(r.text, "taskautomation_runs_total", task='odd "name"', outcome="ok") == 0
    assert _value(r.text, "taskautomation_supervisor_up") == 0


def test_a_bad_textfile_path_is_one_line_naming_it(home: Path) -> None:
    for path, why in ((home / "nowhere" / "x.prom", "no folder"), (home / "x.txt", "reads *.prom only")):
        result = cli(home, "metrics", "--textfile", str(path))
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and str(path) in result.stderr and why in result.stderr
        assert not path.exists()


# --------------------------------------------------------------------- a real supervisor, pruning, restarts
def test_counters_keep_counting_through_pruning_and_restarts_of_a_real_supervisor(home: Path) -> None:
    (home / "taskautomation.ini").write_text("[Supervisor]\nKeepRuns = 1\n")
    make_task(home, "fast", every="0.02")  # every 1.2 s

    def scrape(*, at_least: int, up: int) -> float | None:
        result = cli(home, "metrics")
        assert result.returncode == 0, result.stderr
        if _value(result.stdout, "taskautomation_supervisor_up") != up:
            return None
        ok = _value(result.stdout, "taskautomation_runs_total", task="fast", outcome="ok")
        return ok if ok >= at_least else None

    with SupervisorProcess(home):
        first = wait_for(lambda: scrape(at_least=3, up=1), timeout=90, what="3 ok runs counted, live")
    history = cli(home, "history", "fast", "--json", "--limit", "100")
    assert len(json.loads(history.stdout)["runs"]) < first  # pruned to KeepRuns, yet the counter kept them all
    stopped = wait_for(lambda: scrape(at_least=int(first), up=0), timeout=30, what="the same count, offline")
    with SupervisorProcess(home):
        wait_for(lambda: scrape(at_least=int(stopped) + 2, up=1), timeout=90, what="2 more ok runs after a restart")


# --------------------------------------------------------------------------------- a real Prometheus server
def _prometheus_config(path: Path, *, target: str, token_file: Path) -> None:
    path.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: taskautomation\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n"
        "    authorization:\n"
        f"      credentials_file: {token_file}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )


def test_a_real_prometheus_server_scrapes_the_dashboard_with_the_metrics_token(home: Path, tmp_path: Path) -> None:
    prometheus = _needs("prometheus")
    ini = home / "taskautomation.ini"
    ini.write_text(f"[Web]\nMetricsToken = {METRICS_TOKEN}\n")
    os.chmod(ini, 0o600)
    make_task(home, "a")
    add_runs(home, "a", [Outcome.OK, Outcome.OK, Outcome.OK, Outcome.FAILED])
    token_file = tmp_path / "scrape-token"
    token_file.write_text(METRICS_TOKEN + "\n")
    config = tmp_path / "prometheus.yml"
    port = free_port()
    log = tmp_path / "prometheus.log"
    with WebProcess(home) as web:
        _prometheus_config(config, target=web.base.removeprefix("http://"), token_file=token_file)
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            query = urllib.parse.quote('taskautomation_runs_total{task="a",outcome="ok"}')

            def answer() -> str | None:
                if server.poll() is not None:
                    raise AssertionError(f"prometheus exited ({server.returncode}):\n{log.read_text()[-3000:]}")
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query?query={query}", timeout=5)
                except httpx.TransportError:
                    return None  # not listening yet
                result = r.json()["data"]["result"] if r.status_code == 200 else []
                return result[0]["value"][1] if result else None

            value = wait_for(answer, timeout=90, interval=0.2, what=f"prometheus to answer for {query}")
            targets = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    assert value == "3"
    [target] = targets["data"]["activeTargets"]
    assert target["health"] == "up", target
