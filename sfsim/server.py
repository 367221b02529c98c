"""Serving the org: uvicorn on a socket we bind ourselves, optional TLS from a throwaway CA.

``SimOrg`` is the in-process entry point (tests, benchmarks, the demo)::

    async with SimOrg(port=0) as sim:
        sim.info["instance_url"]

It owns one TaskGroup: the uvicorn server task and each plugin's ``run()``. Leaving the block
stops the server (connections are closed), cancels the plugins, and saves state to ``state_dir``.
Signals are not touched here: the CLI installs its own handlers (uvicorn's would re-raise the
signal after shutdown and turn a clean SIGTERM into a non-zero exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import uvicorn

from sfsim.app import SimApp
from sfsim.org import Org, SimConfig
from sfsim.schema import Schema, load_schema

__all__ = ["SimOrg"]

_STARTUP_TIMEOUT_S: Final = 15.0
_GRACEFUL_SHUTDOWN_S: Final = 5
_EXPECTED_UVICORN_ERRORS: Final = ("ASGI callable returned without completing response.",)


class _DroppedConnectionFilter(logging.Filter):
    """Silence uvicorn's complaint about the responses we cut off on purpose (drop faults)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in _EXPECTED_UVICORN_ERRORS


def _install_log_filter() -> None:
    # Global state, installed once: uvicorn's error logger is process-wide.
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DroppedConnectionFilter) for f in logger.filters):
        logger.addFilter(_DroppedConnectionFilter())


class _Server(uvicorn.Server):
    """uvicorn without its signal handling (the owner of the event loop handles signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class SimOrg:
    """An emulated org served over real sockets, as an async context manager."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        api_limit: int | None = None,
        token_ttl: float | None = None,
        bulk_rate: float | None = None,
        schema: Schema | str | Path | None = None,
        state_dir: str | Path | None = None,
        config: SimConfig | None = None,
        jwt_cert_pem: bytes | None = None,
        seed: int | None = None,
        refresh_token_rotation: bool | None = None,
    ) -> None:
        cfg = config or SimConfig()
        if api_limit is not None:
            cfg.api_limit = api_limit
        if token_ttl is not None:
            cfg.token_ttl = token_ttl
        if bulk_rate is not None:
            cfg.bulk_rate = bulk_rate
        if state_dir is not None:
            cfg.state_dir = Path(state_dir)
        if jwt_cert_pem is not None:
            cfg.jwt_cert_pem = jwt_cert_pem
        if seed is not None:
            cfg.seed = seed
        if refresh_token_rotation is not None:
            cfg.refresh_token_rotation = refresh_token_rotation
        self.config = cfg
        self.host = host
        self.port = port
        self.tls = tls
        self._schema = load_schema(schema) if isinstance(schema, (str, Path)) else schema
        self._org: Org | None = None
        self._server: _Server | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._plugin_tasks: list[asyncio.Task[None]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._closed = False

    # ---------------------------------------------------------------- public

    @property
    def org(self) -> Org:
        """The org's state (records, usage, faults), for in-process inspection."""
        if self._org is None:
            raise RuntimeError("SimOrg is not running: use `async with SimOrg(...)`")
        return self._org

    @property
    def info(self) -> dict[str, Any]:
        """instance_url, token_url, client_id, client_secret, username, password, ca_file."""
        return self.org.info()

    @property
    def instance_url(self) -> str:
        return self.org.instance_url

    @property
    def ca_file(self) -> str | None:
        return self.org.ca_file

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> SimOrg:
        if self._org is not None or self._closed:
            raise RuntimeError("a SimOrg can be entered only once")
        _install_log_filter()
        org = Org(self.config, self._schema)
        org.load_state()
        sock = self._bind()
        try:
            port = sock.getsockname()[1]
            ssl_files = self._tls_files() if self.tls else None
            scheme = "https" if self.tls else "http"
            org.instance_url = f"{scheme}://{_url_host(self.host)}:{port}"
            if ssl_files is not None:
                org.ca_file = str(ssl_files[0])
            self._org = org
            app = SimApp(org)
            uv_config = uvicorn.Config(
                app,
                lifespan="off",
                http="httptools",
                ws="none",
                # Leave the process's logging configuration alone (the daemon's demo and tests run
                # a sim in-process); uvicorn's records propagate to whatever handlers exist.
                log_config=None,
                log_level="warning",
                access_log=False,
                server_header=False,
                timeout_keep_alive=30,
                timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
                ssl_certfile=str(ssl_files[1]) if ssl_files else None,
                backlog=2048,
            )
            server = _Server(uv_config)
            self._server = server
            tg = asyncio.TaskGroup()
            await tg.__aenter__()
            self._tg = tg
        except BaseException:
            sock.close()
            self._cleanup_tmp()
            raise
        try:
            serve_task = tg.create_task(server.serve(sockets=[sock]), name="sfsim-server")
            for plugin in org.plugins:
                self._plugin_tasks.append(
                    tg.create_task(plugin.run(), name=f"sfsim-plugin-{plugin.name}")
                )
            await self._wait_started(server, serve_task)
        except BaseException as exc:
            await self._shutdown(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Stop serving (idempotent)."""
        await self._shutdown(None, None, None)

    # ---------------------------------------------------------------- internals

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for
        # sockets whose proto says TCP, and without it every response waits ~40 ms (Nagle +
        # delayed ACK, since uvicorn writes the head and the body separately).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _tls_files(self) -> tuple[Path, Path]:
        """(CA PEM, server key+chain PEM). The CA persists in ``state_dir`` when there is one."""
        import trustme

        if self.config.state_dir is not None:
            directory = self.config.state_dir / "tls"
            directory.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="sfsim-tls-")
            directory = Path(self._tmp.name)
        ca_cert, ca_key = directory / "ca.pem", directory / "ca-key.pem"
        if ca_cert.exists() and ca_key.exists():
            ca = trustme.CA.from_pem(ca_cert.read_bytes(), ca_key.read_bytes())
        else:
            ca = trustme.CA(organization_name="sfsim local org")
            ca.cert_pem.write_to_path(str(ca_cert))
            ca.private_key_pem.write_to_path(str(ca_key))
            ca_key.chmod(0o600)
        names = ["127.0.0.1", "localhost", "::1"]
        if self.host not in names and self.host not in ("0.0.0.0", "::", ""):
            names.append(self.host)
        leaf = ca.issue_cert(*names)
        server_pem = directory / "server.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
        server_pem.chmod(0o600)
        return ca_cert, server_pem

    @staticmethod
    async def _wait_started(server: _Server, task: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STARTUP_TIMEOUT_S
        while not server.started:
            if task.done():
                task.result()  # re-raise the start-up failure
                raise RuntimeError("sfsim server stopped during start-up")
            if loop.time() > deadline:
                raise TimeoutError(f"sfsim server did not start within {_STARTUP_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.002)

    async def _shutdown(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.should_exit = True
        for task in self._plugin_tasks:
            task.cancel()
        try:
            if self._tg is not None:
                await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            if self._org is not None:
                self._org.save_state()
            self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
