"""The dashboard's routes: pages, the JSON API (the CLI's schemas), the actions and the run log stream.

Reads go through :class:`~supervisor.web.query.Reader` (history opened read-only); actions go through the
control socket (:mod:`supervisor.web.actions`). Every route sits behind :class:`~supervisor.web.guard.Guard`,
then :class:`~supervisor.web.faults.Faults` (every 5xx logged with its cause; a route that raised still
answers). An error is answered in the asker's format: an HTML page (or, for htmx, the flash fragment) for a
browser, JSON for the API; a 503 carries ``Retry-After``. While the supervisor runs but does not answer, the
status is the offline one and every page shows a banner saying its figures are from the history.
Templates are Jinja2 with autoescaping on for every file, so task names, messages and log lines are always
escaped; the only markup inserted unescaped is the SVG built (and escaped) by :mod:`supervisor.web.svg`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .. import __version__
from ..config.listen import Listen, allowed_hosts
from ..execution.params import ParamError
from ..model import Outcome
from ..paths import Paths
from ..query import timefmt
from ..query.scrape import CONTENT_TYPE, Scraper, accepts_gzip
from . import fmt, svg
from .actions import ACTIONS, ActionResult, Ask, act, control_asker, run_params
from .auth import COOKIE_NAME, SESSION_SECONDS, csrf_token, new_session, token_matches
from .faults import Faults, blame, wants_json
from .guard import Guard, csrf_ok
from .query import HISTORY_PAGE, Reader, parse_outcomes
from .stream import run_events

PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class WebConfig:
    """What one dashboard serves and how it is reached."""

    paths: Paths
    listen: Listen
    token: str
    extra_hosts: tuple[str, ...] = ()
    metrics_token: str | None = None  # [Web] MetricsToken: also good for GET /metrics


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Dashboard:
    """The route handlers of one dashboard; ``clock`` and ``ask`` (the control transport) are injected."""

    def __init__(self, config: WebConfig, *, clock: Callable[[], datetime], ask: Ask) -> None:
        self.config = config
        self.clock = clock
        self.ask = ask
        self.reader = Reader(config.paths)
        self.scraper = Scraper(
            config.paths, records=self.reader.records, source=self.reader.source, version=__version__
        )
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(PACKAGE / "templates"), autoescape=True)
        env.filters.update(absolute=fmt.absolute, duration=timefmt.duration, oclass=svg.outcome_class)
        self.templates = Jinja2Templates(env=env)

    # ------------------------------------------------------------------ helpers
    def page(self, request: Request, name: str, context: dict[str, Any], *, status: int = 200) -> Response:
        now = self.clock()
        session = getattr(request.state, "session", "") or ""
        base = {
            "csrf": csrf_token(self.config.token, session) if session else "",
            "now": now,
            "rel": lambda iso: fmt.relative(iso, now=now),
            "home": str(self.config.paths.home),
            "outcomes": [o.value for o in Outcome],
        }
        return self.templates.TemplateResponse(request, name, {**base, **context}, status_code=status)

    def refuse(self, request: Request, status: int, message: str, retry_after: int | None = None) -> Response:
        """An error answer in the asker's format (see the module docstring); a 5xx names its cause for the log."""
        if status >= 500:
            blame(request, message)
        result = ActionResult(status, {"ok": False, "error": message}, retry_after)
        response: Response
        if request.headers.get("hx-request") == "true":
            response = self.page(request, "_flash.html", {"result": result}, status=status)
        elif wants_json(request.scope):
            response = JSONResponse(dict(result.body), status_code=status)
        elif status == 503:
            response = self.page(request, "unavailable.html", {"error": message, "retry": retry_after}, status=status)
        else:
            response = self.page(request, "error.html", {"error": message, "status": status}, status=status)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    def status(self) -> dict[str, Any]:
        return self.reader.status()

    def _task_row(self, status: dict[str, Any], name: str) -> dict[str, Any] | None:
        return next((t for t in status["tasks"] if t["name"] == name), None)

    def _tasks_context(self) -> dict[str, Any]:
        status = self.status()
        names = svg.pick_lanes(status["tasks"])
        now = self.clock()
        sparks = {
            t["name"]: self.reader.sparkline(t["name"], (t.get("last_run") or {}).get("run_id"))
            for t in status["tasks"]
        }
        return {
            "status": status,
            "timeline": self.reader.timeline(names, now=now, mono=time.monotonic()),
            "sparks": sparks,
            "lanes": len(names),
        }

    # ------------------------------------------------------------------ login
    async def login(self, request: Request) -> Response:
        if token_matches(self.config.token, request.query_params.get("token")):
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(
                COOKIE_NAME,
                new_session(self.config.token, now=time.time()),
                httponly=True,
                samesite="strict",
                max_age=SESSION_SECONDS,
                path="/",
            )
            return response
        given = "token" in request.query_params
        return self.page(request, "login.html", {"wrong": given}, status=401)

    async def logout(self, request: Request) -> Response:
        if not await csrf_ok(request, self.config.token):
            return self._csrf_refused(request)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    # ------------------------------------------------------------------ pages
    async def index(self, request: Request) -> Response:
        context = await run_in_threadpool(self._tasks_context)
        return self.page(request, "tasks.html", context)

    async def tasks_fragment(self, request: Request) -> Response:
        context = await run_in_threadpool(self._tasks_context)
        return self.page(request, "_tasks.html", context)

    async def task_page(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            outcomes = parse_outcomes(request.query_params.get("outcome"))
            page = int(request.query_params.get("page", "1"))
        except ValueError as exc:
            return self.refuse(request, 400, str(exc))

        def load() -> dict[str, Any] | None:
            status = self.status()
            row = self._task_row(status, name)
            history = self.reader.history(name, limit=HISTORY_PAGE, page=page, outcomes=outcomes)
            if row is None and not history["runs"] and name not in self.reader.task_names():
                return None
            return {
                "task": row,
                "name": name,
                "history": history,
                "files": self.reader.task_files(name),
                "outcome": ",".join(o.value for o in outcomes),
                "spark": svg.sparkline(self.reader.last_runs(name)),
                "supervisor": status.get("supervisor"),
                "offline": status.get("offline"),
            }

        context = await run_in_threadpool(load)
        if context is None:
            return self.refuse(request, 404, f"no task named {name!r}")
        return self.page(request, "task.html", context)

    async def run_page(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        found = await run_in_threadpool(self.reader.run, run_id)
        if found is None:
            return self.refuse(request, 404, f"no run {run_id!r}")
        return self.page(request, "run.html", {"run": found["run"], "log": found["log"]})

    async def run_stream(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        record = await run_in_threadpool(self.reader.run_record, run_id)
        if record is None:
            return self.refuse(request, 404, f"no run {run_id!r}")
        events = run_events(self.reader.log_of(record), run_id, lookup=lambda: self.reader.run_record(run_id))
        return StreamingResponse(events, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})

    # ------------------------------------------------------------------ JSON API
    async def api_status(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.status))

    async def api_history(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            outcomes = parse_outcomes(request.query_params.get("outcome"))
            limit = int(request.query_params.get("limit", str(HISTORY_PAGE)))
            page = int(request.query_params.get("page", "1"))
        except ValueError as exc:
            return self.refuse(request, 400, str(exc))

        def load() -> dict[str, Any] | None:
            history = self.reader.history(name, limit=limit, page=page, outcomes=outcomes)
            if not history["runs"] and name not in self.reader.task_names():
                return None
            return history

        history = await run_in_threadpool(load)
        if history is None:
            return self.refuse(request, 404, f"no task named {name!r} and no history for it")
        return JSONResponse(history)

    async def api_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        found = await run_in_threadpool(self.reader.run, run_id)
        if found is None:
            return self.refuse(request, 404, f"no run {run_id!r}")
        return JSONResponse(found)

    async def api_action(self, request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ACTIONS:
            return self.refuse(request, 404, f"unknown action {action!r} (one of: {', '.join(ACTIONS)})")
        if not await csrf_ok(request, self.config.token):
            return self._csrf_refused(request)
        by = f"web ({request.state.auth}, {request.client.host if request.client else '?'})"
        try:
            params = (
                run_params(request.headers.get("content-type", ""), await request.body()) if action == "run" else ()
            )
        except ParamError as exc:
            return self.refuse(request, 400, f"bad run parameter (env) {exc}")
        result = await run_in_threadpool(lambda: act(action, name, ask=self.ask, by=by, params=params))
        return self._action_response(request, result)

    def _action_response(self, request: Request, result: ActionResult) -> Response:
        if result.status != 200:
            response = self.refuse(request, result.status, result.message, result.retry_after)
            if request.headers.get("hx-request") == "true":
                response.headers["HX-Trigger"] = "refresh"
            return response
        if request.headers.get("hx-request") == "true":
            response = self.page(request, "_flash.html", {"result": result}, status=result.status)
            response.headers["HX-Trigger"] = "refresh"
            return response
        target = request.query_params.get("next")
        # Only a path on this site: "//host" and "/\host" would send the browser elsewhere.
        if request.state.auth == "cookie" and target and target.startswith("/") and target[1:2] not in ("/", "\\"):
            return RedirectResponse(target, status_code=303)  # a plain form post (no script): back to the page
        return JSONResponse(dict(result.body), status_code=result.status)

    def _csrf_refused(self, request: Request) -> Response:
        return self.refuse(request, 403, "missing or wrong CSRF token (form field csrf or header X-CSRF-Token)")

    async def metrics(self, request: Request) -> Response:
        gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))
        body = await run_in_threadpool(lambda: self.scraper.exposition(gzipped=gzipped))
        headers = {"Vary": "Accept-Encoding", **({"Content-Encoding": "gzip"} if gzipped else {})}
        return Response(body, media_type=CONTENT_TYPE, headers=headers)

    async def favicon(self, request: Request) -> Response:
        return Response(status_code=204)

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/login", self.login),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/", self.index),
            Route("/fragments/tasks", self.tasks_fragment),
            Route("/tasks/{name}", self.task_page),
            Route("/runs/{run_id}", self.run_page),
            Route("/runs/{run_id}/events", self.run_stream),
            Route("/api/status", self.api_status),
            Route("/api/tasks/{name}/history", self.api_history),
            Route("/api/runs/{run_id}", self.api_run),
            Route("/api/tasks/{name}/{action:str}", self.api_action, methods=["POST"]),
            Route("/metrics", self.metrics),
            Route("/favicon.ico", self.favicon),
            Mount("/static", app=StaticFiles(directory=PACKAGE / "static"), name="static"),
        ]


def create_app(
    config: WebConfig,
    *,
    clock: Callable[[], datetime] = _utcnow,
    ask: Ask | None = None,
    wall: Callable[[], float] = time.time,
) -> Starlette:
    """The ASGI application of one dashboard (the Guard wraps every route)."""
    dashboard = Dashboard(config, clock=clock, ask=ask or control_asker(config.paths))
    app = Starlette(routes=dashboard.routes())
    app.add_middleware(Faults, respond=dashboard.refuse)  # inside the Guard: its answers get the headers
    app.add_middleware(
        Guard,
        token=config.token,
        metrics_token=config.metrics_token,
        allowed=allowed_hosts(config.listen, config.extra_hosts),
        now=wall,
    )
    app.state.dashboard = dashboard
    return app
