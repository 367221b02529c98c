"""``/healthz``, ``/readyz`` and ``/metrics`` over HTTP (starlette on uvicorn).

- ``/healthz``: 200 while the process and its event loop answer.
- ``/readyz``: 200 when every readiness check passes (spool writable and
  accepting outcomes, Salesforce reachable and authenticated, no rail paused),
  else 503 with the list of checks as JSON, so ``curl`` shows what is wrong.
- ``/metrics``: Prometheus text format from :class:`daemon.metrics.Metrics`.
  Before each scrape the adapters' gauges are refreshed (``before_scrape``) and the
  readiness checks run (reading the spool's stats, which refresh its gauges), so
  ``dispo_ready`` is what ``/readyz`` would answer now (Prometheus scrapes
  ``/metrics`` only).

The server binds its socket in :meth:`HealthServer.start` (so the port is
known, and connections queue, before serving starts) and serves in
:meth:`HealthServer.serve`, a task owned by the daemon's TaskGroup.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from daemon.metrics import CONTENT_TYPE, Metrics

__all__ = ["HealthServer", "ReadinessCheck", "build_app"]

log = structlog.get_logger("daemon.http")

# Readiness checks may touch SQLite or Salesforce state; never let a probe hang.
_READY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ReadinessCheck:
    """One readiness condition and why it fails."""

    name: str
    ok: bool
    detail: str = ""


Readiness = Callable[[], Awaitable[Sequence[ReadinessCheck]]]


def build_app(
    metrics: Metrics,
    readiness: Readiness,
    *,
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """The ASGI app; pure wiring, testable without a socket."""
    started = time.monotonic()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "uptime_s": round(time.monotonic() - started, 1)})

    async def evaluate() -> list[ReadinessCheck]:
        """The readiness checks, also setting ``dispo_ready`` (both endpoints call it)."""
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S):
                checks = list(await readiness())
        except TimeoutError:
            checks = [ReadinessCheck("readiness", False, "checks did not answer within 5 s")]
        except Exception as exc:  # a probe must answer: a failing check is "not ready"
            log.warning("readiness checks failed", error=f"{type(exc).__name__}: {exc}")
            checks = [ReadinessCheck("readiness", False, f"{type(exc).__name__}: {exc}")]
        metrics.ready.set(1 if all(c.ok for c in checks) else 0)
        return checks

    async def readyz(request: Request) -> Response:
        checks = await evaluate()
        ok = all(c.ok for c in checks)
        body = {"ready": ok, "checks": [asdict(c) for c in checks]}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        if before_scrape is not None:
            await before_scrape()
        await evaluate()
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def not_found(request: Request) -> Response:
        return PlainTextResponse("see /healthz, /readyz, /metrics\n", status_code=404)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route("/", not_found),
        ]
    )


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn would replace our SIGTERM/SIGINT handlers with its own; the
        # daemon owns signals (they set its stop event) and stops us explicitly.
        yield


class HealthServer:
    """The health/metrics server: ``start()`` binds, ``serve()`` runs, ``stop()`` ends."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        metrics: Metrics,
        readiness: Readiness,
        before_scrape: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._app = build_app(metrics, readiness, before_scrape=before_scrape)
        self._sock: socket.socket | None = None
        self._server: _Server | None = None

    async def start(self) -> None:
        """Bind and listen; afterwards ``self.port`` is the real port."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the
        # listening socket says TCP; otherwise each keep-alive scrape waits ~40 ms (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        log.info("health server listening", listen=f"{self.host}:{self.port}")

    async def serve(self) -> None:
        """Serve until :meth:`stop`."""
        if self._server is None or self._sock is None:
            raise RuntimeError("HealthServer.start() was not called")
        try:
            await self._server.serve(sockets=[self._sock])
        finally:
            self._sock.close()

    async def stop(self) -> None:
        """Ask the server to finish; ``serve()`` returns shortly after. Idempotent."""
        if self._server is not None:
            self._server.should_exit = True
