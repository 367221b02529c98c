"""`dispo-sync ingest FILE`: a CSV/CDR backfill into a real spool, options and config tables."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.cli import main
from spool import CallOutcome, Disposition, open_spool

CSV = """Call ID,Result,End,Customer
c-1,SALE,2026-11-24 08:00:00,L1
c-2,NA,2026-11-24 08:05:00,L2
c-3,SALE,2026-11-24T08:10:00+00:00,L3
"""


def config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[spool]\npath = "{tmp_path / "spool.db"}"\n[log]\nformat = "json"\n{extra}')
    return cfg


async def queued_in(path: Path) -> dict[str, CallOutcome]:
    """Every pending outcome by call id (claimed, then released unchanged)."""
    async with open_spool(path) as spool:
        claims = await spool.claim("bulk", 100, urgent=None)
        await spool.release(claims)
        return {c.outcome.call_id: c.outcome for c in claims}


async def urgent_in(path: Path) -> list[str]:
    """Call ids of the pending outcomes marked urgent."""
    async with open_spool(path) as spool:
        claims = await spool.claim("live", 100, urgent=True)
        await spool.release(claims)
        return [c.outcome.call_id for c in claims]


def queued(path: Path) -> dict[str, CallOutcome]:
    return asyncio.run(queued_in(path))


def test_ingest_csv_with_mapping_codes_and_zone_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--mapping, --disposition and --tz shape the outcomes; a second run queues nothing."""
    export = tmp_path / "calls.csv"
    export.write_text(CSV)
    cfg = config(tmp_path)
    argv = [
        "ingest",
        str(export),
        "--config",
        str(cfg),
        "--format",
        "csv",
        "--mapping",
        "call_id=Call ID",
        "--mapping",
        "disposition=Result",
        "--mapping",
        "ended_at=End",
        "--mapping",
        "lead_external_key=Customer",
        "--disposition",
        "SALE=connected",
        "--disposition",
        "NA=no_answer",
        "--tz",
        "America/Chicago",
        "--source",
        "crm",
        "--direction",
        "inbound",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 rows, 3 queued, 0 already known, 0 refused" in out
    assert "America/Chicago" in out
    got = queued(tmp_path / "spool.db")
    assert sorted(got) == ["c-1", "c-2", "c-3"]
    assert got["c-1"].source == "crm" and got["c-1"].disposition is Disposition.CONNECTED
    assert got["c-2"].disposition is Disposition.NO_ANSWER
    assert got["c-1"].direction.value == "inbound"
    # Naive times are Chicago wall-clock (UTC-6 in November); explicit offsets stay.
    assert got["c-1"].ended_at == datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
    assert got["c-3"].ended_at == datetime(2026, 11, 24, 8, 10, tzinfo=UTC)
    assert got["c-1"].lead is not None and got["c-1"].lead.external_key == "L1"

    assert main(argv) == 0
    assert "0 queued" in capsys.readouterr().out
    assert len(queued(tmp_path / "spool.db")) == 3


def test_ingest_takes_a_file_adapter_table_and_the_default_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--adapter NAME reads format, mapping and codes from config; [daemon] default_tz applies."""
    export = tmp_path / "calls.csv"
    export.write_text(CSV)
    cfg = config(
        tmp_path,
        '[daemon]\ndefault_tz = "Europe/Paris"\n[rails]\nlive_dispositions = ["no_answer"]\n'
        '[[adapter]]\ntype = "file"\nname = "crm-export"\n'
        f'path = "{export}"\nformat = "csv"\n'
        'mapping = { call_id = "Call ID", disposition = "Result", ended_at = "End" }\n'
        'dispositions = { SALE = "connected", NA = "no_answer" }\n',
    )
    assert main(["ingest", str(export), "--config", str(cfg), "--adapter", "crm-export"]) == 0
    assert "times without an offset read as Europe/Paris" in capsys.readouterr().out
    got = queued(tmp_path / "spool.db")
    assert got["c-1"].source == "crm-export"
    assert got["c-1"].ended_at == datetime(2026, 11, 24, 7, 0, tzinfo=UTC)  # Paris is UTC+1
    # [rails] live_dispositions decides what is urgent, as under `run`.
    assert sorted(asyncio.run(urgent_in(tmp_path / "spool.db"))) == ["c-2"]

    assert main(["ingest", str(export), "--config", str(cfg), "--adapter", "nope"]) == 2
    assert "--adapter: " in (err := capsys.readouterr().err)
    assert "file adapters with a name: crm-export" in err


def test_ingest_with_a_malformed_option_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: exit 2 = wrong usage. A malformed --mapping, --disposition or --tz is wrong
    usage (not 1, 'found a problem'): exit 2, the message names the option, nothing queued."""
    export = tmp_path / "calls.csv"
    export.write_text(CSV)
    cfg = config(tmp_path)
    base = ["ingest", str(export), "--config", str(cfg), "--format", "csv"]
    for extra, message in (
        (["--mapping", "call_id"], "--mapping: expected KEY=VALUE, got 'call_id'"),
        (["--mapping", "mood=Result"], "--mapping: unknown field(s) mood"),
        (["--disposition", "SALE"], "--disposition: expected KEY=VALUE, got 'SALE'"),
        (["--disposition", "SALE=happy"], "--disposition.SALE"),
        (["--tz", "Mars/Olympus"], "--tz: unknown time zone 'Mars/Olympus'"),
    ):
        assert main(base + extra) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "spool.db").exists()


def test_ingest_reports_refused_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unreadable rows: exit 1, counted and named in the summary."""
    export = tmp_path / "calls.csv"
    export.write_text(CSV + "c-4,SALE,not a time,L4\n")
    cfg = config(tmp_path)
    base = ["ingest", str(export), "--config", str(cfg), "--format", "csv"]
    mapped = ["--mapping", "call_id=Call ID", "--mapping", "disposition=Result"]
    codes = ["--disposition", "SALE=connected", "--disposition", "NA=no_answer"]
    assert main([*base, *mapped, "--mapping", "ended_at=End", *codes]) == 1
    out = capsys.readouterr().out
    assert "4 rows, 3 queued, 0 already known, 1 refused" in out
    assert "refused 1: End" in out


async def test_run_gives_adapters_the_default_zone(tmp_path: Path) -> None:
    """Under `run`, a file adapter without its own tz reads naive times in [daemon] default_tz."""
    from daemon.notify import Notifier
    from daemon.runner import Daemon
    from daemon.settings import load_settings
    from spool import read_stats

    export = tmp_path / "calls.csv"
    export.write_text(CSV)
    cfg = config(
        tmp_path,
        '[salesforce]\nlogin_url = "https://example.my.salesforce.com"\nclient_id = "id"\n'
        'client_secret = "secret-value"\n[http]\nlisten = "127.0.0.1:0"\n'
        '[daemon]\ndefault_tz = "Asia/Tokyo"\n'
        f'[[adapter]]\ntype = "file"\nname = "crm-export"\npath = "{export}"\nformat = "csv"\n'
        'mapping = { call_id = "Call ID", disposition = "Result", ended_at = "End" }\n'
        'dispositions = { SALE = "connected", NA = "no_answer" }\n',
    )
    settings = load_settings(cfg, environ={})

    async def no_rails(*_: object) -> None:
        return None

    daemon = Daemon(
        settings, notifier=Notifier(None), rails_factory=no_rails, install_signal_handlers=False
    )
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        async with asyncio.timeout(30):
            await daemon.started.wait()
            while True:  # poll the file the daemon writes, with the deadline above
                if read_stats(settings.spool.path).pending == 3:
                    break
                await asyncio.sleep(0.02)
        daemon.request_stop()
    assert run.result() == 0
    got = await queued_in(settings.spool.path)
    assert got["c-1"].ended_at == datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # Tokyo is UTC+9
