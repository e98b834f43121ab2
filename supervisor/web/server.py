"""``taskautomation web``: serve one home's dashboard with uvicorn.

Policy: the listen address comes from ``--listen``, else ``[Web] Listen`` in taskautomation.ini, else
127.0.0.1:8765. Any address that is not loopback gets a loud warning on stderr (the dashboard speaks plain
HTTP: its token and cookie cross the network in clear). The login URL (with the token) is printed on stdout
once the socket is bound, so a script or a test can read it and know the server is up.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import TYPE_CHECKING, TextIO

from ..config.listen import DEFAULT_LISTEN, Listen, ListenError, parse_listen
from ..config.schema import read_home_config
from ..errors import TaskAutomationError
from ..logsetup import FORMAT, ZonedFormatter
from ..paths import Paths
from .auth import load_or_create_token

if TYPE_CHECKING:
    import uvicorn

GRACEFUL_SHUTDOWN_S = 3  # open log streams are cut after this on stop
# Connections the kernel queues while the server catches up: hundreds of clients at once are slow, never
# refused (capped by net.core.somaxconn).
LISTEN_BACKLOG = 1024


def resolve_listen(paths: Paths, given: str | None) -> tuple[Listen, tuple[str, ...]]:
    """The address to bind (``given``, else [Web] Listen, else the default) and [Web] AllowedHosts."""
    home_config, _ = read_home_config(paths.home_config)
    text = given or home_config.web_listen or DEFAULT_LISTEN
    try:
        listen = parse_listen(text)
    except ListenError as exc:
        raise TaskAutomationError(f"--listen {text!r}: {exc}") from None
    return listen, home_config.web_allowed_hosts


def warning_for(listen: Listen) -> str | None:
    if listen.loopback:
        return None
    return (
        f"WARNING: the dashboard listens on {listen.host}:{listen.port}, which is not loopback. It speaks plain "
        f"HTTP: anyone on that network can see its token and session cookie. Prefer the default "
        f"127.0.0.1 and an SSH tunnel (ssh -L {listen.port}:127.0.0.1:{listen.port} HOST)."
    )


def login_url(listen: Listen, token: str) -> str:
    return listen.url("/login?token=" + token)


def print_url(paths: Paths, *, listen_text: str | None, out: TextIO = sys.stdout) -> int:
    """``web --url``: the login URL of the home's dashboard (makes the token if there is none yet)."""
    listen, _ = resolve_listen(paths, listen_text)
    token = load_or_create_token(paths.state / "web-token")
    print(login_url(listen, token), file=out)
    return 0


def serve_web(
    paths: Paths,
    *,
    listen_text: str | None,
    parent_fd: int | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Run the dashboard in the foreground until SIGINT/SIGTERM. Returns the exit code.

    ``parent_fd`` (the supervised child): the read end of a pipe held open by the supervisor; at its EOF
    (the supervisor is gone, however it died) the dashboard shuts down.
    """
    import uvicorn  # the optional extra: imported only when the dashboard is served

    from .app import WebConfig, create_app

    listen, extra_hosts = resolve_listen(paths, listen_text)
    paths.state.mkdir(parents=True, exist_ok=True)
    token = load_or_create_token(paths.state / "web-token")
    _log_errors_to(err)
    metrics_token = read_home_config(paths.home_config)[0].web_metrics_token
    app = create_app(
        WebConfig(paths=paths, listen=listen, token=token, extra_hosts=extra_hosts, metrics_token=metrics_token)
    )
    warning = warning_for(listen)
    if warning:
        print("\n" + "!" * 78 + f"\n{warning}\n" + "!" * 78 + "\n", file=err, flush=True)
    sock = _bind(listen)
    bound = Listen(host=listen.host, port=sock.getsockname()[1])  # port 0 = any free port
    if parent_fd is None:
        print(f"dashboard of {paths.home}: open {login_url(bound, token)}", file=out, flush=True)
    else:  # the supervised child writes to a log file: the token stays in its 0600 file
        print(
            f"dashboard of {paths.home}: listening on {bound.url()} (login URL: taskautomation web --url)",
            file=out,
            flush=True,
        )
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        proxy_headers=False,
        server_header=False,
    )
    try:
        asyncio.run(_serve(uvicorn.Server(config), sock, parent_fd=parent_fd))
    finally:
        sock.close()
    return 0


def _log_errors_to(err: TextIO) -> None:
    """The web log: the dashboard's own lines (every 5xx with its cause) go to ``err``, which is
    ``logs/web.log`` for the supervised dashboard."""
    logger = logging.getLogger("taskautomation.web")
    if not logger.handlers:
        handler = logging.StreamHandler(err)
        handler.setFormatter(ZonedFormatter(FORMAT))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _bind(listen: Listen) -> socket.socket:
    """A listening TCP socket on ``listen``, inheritable (uvicorn serves it as it is)."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio turns Nagle off only on sockets that say so, and with Nagle on, a
    # response written as headers + body waits ~40 ms for the client's delayed ACK on a keep-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.host, listen.port))
    except OSError as exc:
        sock.close()
        raise TaskAutomationError(f"cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}") from None
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


async def _serve(server: uvicorn.Server, sock: socket.socket, *, parent_fd: int | None) -> None:
    """Serve until SIGINT/SIGTERM, or until ``parent_fd`` turns readable (it does only at EOF)."""
    if parent_fd is not None:

        def parent_gone() -> None:
            asyncio.get_running_loop().remove_reader(parent_fd)
            server.should_exit = True

        asyncio.get_running_loop().add_reader(parent_fd, parent_gone)
    await server.serve(sockets=[sock])
