"""``dispo-sync sim`` / ``python -m sfsim``: run the emulated org in the foreground.

With ``--print-json`` it prints exactly one JSON line on stdout once it accepts connections
(instance_url, token_url, client_id, client_secret, username, password, ca_file) and nothing else
on stdout. SIGTERM or SIGINT stops it cleanly (state saved to ``--state-dir``), exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog

from sfsim.limits import DEFAULT_API_LIMIT
from sfsim.org import SimConfig
from sfsim.rules import RuleError, parse_rules
from sfsim.schema import SchemaError, default_schema, load_schema
from sfsim.server import SimOrg

__all__ = ["build_parser", "run_sim_cli"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {text}")
    return value


def build_parser(prog: str = "dispo-sync sim") -> argparse.ArgumentParser:
    """The argument parser (shared with ``dispo-sync sim``)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run a local emulated Salesforce org that speaks the real wire protocol "
        "(OAuth, REST, composite, collections, Bulk API 2.0), for trying a configuration "
        "safely and for tests. Stop it with Ctrl-C or SIGTERM.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument(
        "--port", type=_port, default=0, help="port to listen on; 0 picks a free one (default: 0)"
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a certificate from a CA generated on start; the CA "
        "file is reported as ca_file so clients can verify it",
    )
    p.add_argument(
        "--print-json",
        action="store_true",
        help="once ready, print one JSON line with instance_url, token_url, "
        "client_id, client_secret, username, password and ca_file",
    )
    p.add_argument(
        "--schema",
        metavar="FILE",
        type=Path,
        help="describe JSON to use instead of the built-in schema: a list of "
        'describe results or {"sobjects": [...]}, e.g. exported from your org',
    )
    p.add_argument(
        "--api-limit",
        type=_positive_int,
        default=DEFAULT_API_LIMIT,
        help=f"daily API call allocation (default: {DEFAULT_API_LIMIT})",
    )
    p.add_argument(
        "--token-ttl",
        type=_positive_float,
        default=7200.0,
        metavar="SECONDS",
        help="access tokens expire this many seconds after issue (default: 7200)",
    )
    p.add_argument(
        "--bulk-rate",
        type=_positive_float,
        default=None,
        metavar="RECORDS_PER_S",
        help="Bulk API 2.0 processing speed in records per second (default: as fast as possible)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep records, jobs and counters here across restarts",
    )
    p.add_argument(
        "--validation-rules",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON array of your org's validation rules to enforce (see sfsim.rules): "
        "saves breaking one fail with FIELD_CUSTOM_VALIDATION_EXCEPTION",
    )
    p.add_argument(
        "--jwt-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="PEM certificate the JWT bearer flow verifies assertions against",
    )
    p.add_argument(
        "--client-id",
        default=None,
        help="connected app consumer key to accept (default: generated)",
    )
    p.add_argument(
        "--client-secret",
        default=None,
        help="connected app consumer secret to accept (default: generated)",
    )
    p.add_argument(
        "--username",
        default=None,
        help="integration user name (default: integration@dispo-sync.sim)",
    )
    p.add_argument(
        "--password", default=None, help="integration user password (default: generated)"
    )
    return p


@contextlib.contextmanager
def _cli_logging() -> Iterator[None]:
    """Everything the sim logs goes to stderr: stdout carries only the --print-json line.

    Configured only where the caller (``dispo-sync sim``) has not, and undone on the way out, so
    calling :func:`run_sim_cli` in-process leaves no global logging state behind.
    """
    root = logging.getLogger()
    added: logging.Handler | None = None
    old_level = root.level
    if not root.handlers:
        added = logging.StreamHandler(sys.stderr)
        added.setFormatter(logging.Formatter("sfsim: %(levelname)s %(name)s: %(message)s"))
        root.addHandler(added)
        root.setLevel(logging.WARNING)
    configured_here = not structlog.is_configured()
    if configured_here:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            # Not cached: module-level loggers must not keep this configuration after we leave.
            cache_logger_on_first_use=False,
        )
    try:
        yield
    finally:
        if added is not None:
            root.removeHandler(added)
            root.setLevel(old_level)
        if configured_here:
            structlog.reset_defaults()


def _banner(info: dict[str, Any]) -> str:
    """What a person starting the sim by hand needs: where it is and a config to paste."""
    lines = [
        f"sfsim: an emulated Salesforce org is listening at {info['instance_url']}",
        "Point dispo-sync at it with this in your config file:",
        "",
        "  [salesforce]",
        f'  login_url = "{info["instance_url"]}"',
        '  auth = "client_credentials"',
        f'  client_id = "{info["client_id"]}"',
        f'  client_secret = "{info["client_secret"]}"',
    ]
    if info.get("ca_file"):
        lines.append(f'  ca_file = "{info["ca_file"]}"')
    lines += [
        "",
        f"Password flow: username {info['username']}, password {info['password']}. "
        f"Refresh-token flow: POST {info['instance_url']}/__sim/refresh_token for a token.",
        f"Inspect it: {info['instance_url']}/__sim/stats and /__sim/records/Task. "
        "Stop with Ctrl-C.",
    ]
    return "\n".join(lines)


async def _serve(sim: SimOrg, print_json: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with sim:
            if print_json:
                sys.stdout.write(json.dumps(sim.info) + "\n")
                sys.stdout.flush()
            else:
                print(_banner(sim.info), file=sys.stderr)
            await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_sim_cli(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the sim until SIGTERM/SIGINT; returns the exit status."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        schema = load_schema(args.schema) if args.schema is not None else None
    except SchemaError as exc:
        print(f"sfsim: --schema: {exc}", file=sys.stderr)
        return 2
    jwt_cert = None
    if args.jwt_cert is not None:
        try:
            jwt_cert = args.jwt_cert.read_bytes()
        except OSError as exc:
            print(
                f"sfsim: --jwt-cert: cannot read {args.jwt_cert}: {exc.strerror}", file=sys.stderr
            )
            return 2
    rules: list[dict[str, Any]] = []
    if args.validation_rules is not None:
        try:
            rules = json.loads(args.validation_rules.read_text(encoding="utf-8"))
            parse_rules(rules, schema or default_schema())
        except OSError as exc:
            print(
                f"sfsim: --validation-rules: cannot read {args.validation_rules}: {exc.strerror}",
                file=sys.stderr,
            )
            return 2
        except (ValueError, RuleError) as exc:
            print(f"sfsim: --validation-rules: {exc}", file=sys.stderr)
            return 2
    config = SimConfig(
        api_limit=args.api_limit,
        token_ttl=args.token_ttl,
        bulk_rate=args.bulk_rate,
        state_dir=args.state_dir,
        jwt_cert_pem=jwt_cert,
        validation_rules=rules,
    )
    fixed = set()
    for name in ("client_id", "client_secret", "username", "password"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
            fixed.add(name)
    config.fixed_credentials = frozenset(fixed)
    sim = SimOrg(host=args.host, port=args.port, tls=args.tls, schema=schema, config=config)
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        loop_factory = asyncio.new_event_loop
    try:
        with _cli_logging(), asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve(sim, args.print_json))
    except OSError as exc:
        print(
            f"sfsim: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0
