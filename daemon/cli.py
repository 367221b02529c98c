"""``dispo-sync``: the command an admin types. Parses arguments, reads settings once.

Exit codes (also documented in ``--help``):

- 0: success;
- 1: the command ran and found a problem (a check failed, a record was not found);
- 2: wrong command-line usage;
- 78 (``EX_CONFIG``): the configuration is invalid. The systemd unit does not
  restart on it (``RestartPreventExitStatus=78``): a restart cannot fix a typo.

Heavy imports (the spool, the HTTP server, sfsim) happen inside the command
that needs them, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from daemon.settings import DEFAULT_CONFIG_PATH, Settings, SettingsError, load_settings

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78

_DESCRIPTION = """\
dispo-sync copies every call outcome your dialer reports (answered, voicemail,
do-not-call, callback requested, ...) into Salesforce as a Task on the call and
an update on the Lead. Outcomes are first saved to a local queue file (the
"spool"), so nothing is lost if Salesforce or the network is down: they are
sent as soon as it is back.
"""

_EPILOG = """\
exit codes: 0 ok, 1 the command found a problem, 2 wrong usage,
78 the configuration is invalid.

Configuration: one TOML file (--config, default /etc/dispo-sync/config.toml).
Any key can be overridden by an environment variable DISPO_<SECTION>__<KEY>,
e.g. DISPO_SALESFORCE__CLIENT_ID. Secrets can also come from files in
$CREDENTIALS_DIRECTORY (systemd LoadCredential=), e.g. salesforce-client-secret.
--log-format and --log-level may come before or after COMMAND (demo logs its own way).
Run "dispo-sync COMMAND --help" for each command.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


_LOG_FORMATS = ["auto", "console", "logfmt", "json"]
_LOG_LEVELS = ["debug", "info", "warning", "error"]
_LOG_FORMAT_HELP = (
    "log line format (default: [log] format, which defaults to auto: "
    "readable colors in a terminal, key=value lines under systemd or in a pipe)"
)
_LOG_LEVEL_HELP = "how much to log (default: [log] level, which defaults to info)"


def _global_parent() -> argparse.ArgumentParser:
    """--log-format / --log-level once more on every command, so that they may follow it
    (`dispo-sync run --log-format json`, as one appends to ExecStart=) as well as precede it.
    SUPPRESS: when absent after the command, the value given before it is kept."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--log-format", choices=_LOG_FORMATS, default=argparse.SUPPRESS, help=_LOG_FORMAT_HELP
    )
    parent.add_argument(
        "--log-level", choices=_LOG_LEVELS, default=argparse.SUPPRESS, help=_LOG_LEVEL_HELP
    )
    return parent


def _config_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help=f"the configuration file (default: {DEFAULT_CONFIG_PATH})",
    )
    return parent


def _spool_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--spool",
        type=Path,
        metavar="FILE",
        help="the spool file to read (default: [spool] path from the configuration; "
        "with --spool the configuration file is not needed)",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command and its help."""
    common = _global_parent()
    config = _config_parent()
    spool = _spool_parent()
    parser = argparse.ArgumentParser(
        prog="dispo-sync",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--log-format", choices=_LOG_FORMATS, help=_LOG_FORMAT_HELP)
    parser.add_argument("--log-level", choices=_LOG_LEVELS, help=_LOG_LEVEL_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser(
        "run",
        parents=[common, config],
        formatter_class=_Formatter,
        help="run the service: receive outcomes from the dialer and send them to Salesforce",
        description="""\
Run the service in the foreground. This is what systemd starts
(systemd/dispo-sync.service). It listens for the dialer as configured in the
[[adapter]] sections, saves each outcome to the spool file, and sends it to
Salesforce: do-not-call and callback outcomes at once, the rest in batches.

Stop it with Ctrl-C or "systemctl stop dispo-sync": it stops accepting new
outcomes (the dialer is told to retry), finishes what it is sending, and exits
within 30 seconds. Nothing saved in the spool is lost; it is sent after the
next start. "systemctl reload dispo-sync" (SIGHUP) re-reads the field mapping
file.
""",
    )

    sim = commands.add_parser(
        "sim",
        add_help=False,
        help="run a local imitation of a Salesforce org, for trying things out and tests",
        description="Run the Salesforce simulator (sfsim). All arguments go to it; "
        "see dispo-sync sim --help.",
    )
    sim.add_argument("sim_args", nargs=argparse.REMAINDER)

    demo = commands.add_parser(
        "demo",
        formatter_class=_Formatter,
        help="show the whole thing working on this machine, with a simulated dialer and org",
        description="""\
Start a simulated Salesforce org and a simulated dialer on this machine, run
the service between them for a while, and show what arrived in Salesforce.
Needs no configuration, no network and no Salesforce account.
""",
    )
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20)")
    demo.add_argument("--rate", type=float, default=20.0, help="calls per second (default 20)")

    status = commands.add_parser(
        "status",
        parents=[common, config, spool],
        formatter_class=_Formatter,
        help="show what is waiting to be sent, what failed, and the last API quota reading",
        description="""\
Show a summary read from the spool file: how many outcomes are waiting, being
sent, sent and failed (by rail: live, collections, bulk), the age of the oldest
one still waiting, the bulk jobs in progress, failed records (dead letters) by
Salesforce error code, and the last API quota reading. Works whether the
service is running or stopped; it never changes anything.
""",
    )
    status.add_argument("--json", action="store_true", help="print JSON for scripts")

    dead = commands.add_parser(
        "dead-letters",
        parents=[common],
        formatter_class=_Formatter,
        help="list, inspect, resend or delete outcomes Salesforce refused",
        description="""\
Outcomes that Salesforce refused for good (for example a picklist value it does
not know, a missing Lead, a field too long) are kept as "dead letters" with the
error Salesforce gave. Fix the cause (the mapping or the org), then retry them.
""",
    )
    dead_commands = dead.add_subparsers(dest="dead_command", metavar="ACTION", required=True)
    dl_list = dead_commands.add_parser(
        "list", parents=[common, config, spool], help="list dead letters, newest first"
    )
    dl_list.add_argument("--error-code", metavar="CODE", help="only this Salesforce error code")
    dl_list.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    dl_list.add_argument("--json", action="store_true", help="print JSON for scripts")
    dl_show = dead_commands.add_parser(
        "show",
        parents=[common, config, spool],
        help="show one dead letter in full: the call and the error",
    )
    dl_show.add_argument("id", type=int, help="the dead letter's ID (from list)")
    dl_retry = dead_commands.add_parser(
        "retry",
        parents=[common, config, spool],
        help="queue dead letters to be sent again (after you fixed the cause)",
        description="Put dead letters back in the queue. The running service picks them up "
        "on its next pass; if it is stopped, after its next start.",
    )
    which = dl_retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", help="one dead letter's ID")
    which.add_argument("--all", action="store_true", help="every dead letter")
    which.add_argument("--error-code", metavar="CODE", help="every dead letter with this error")
    dl_drop = dead_commands.add_parser(
        "drop", parents=[common, config, spool], help="delete one dead letter for good"
    )
    dl_drop.add_argument("id", type=int, help="the dead letter's ID")
    dl_export = dead_commands.add_parser(
        "export", parents=[common, config, spool], help="write all dead letters to a CSV file"
    )
    dl_export.add_argument("file", type=Path, metavar="FILE.csv", help="where to write")
    dl_export.add_argument("--error-code", metavar="CODE", help="only this Salesforce error code")

    commands.add_parser(
        "check-config",
        parents=[common, config],
        formatter_class=_Formatter,
        help="check the configuration, the Salesforce login and every mapped field",
        description="""\
Check the configuration file, log in to Salesforce, look at the Task and Lead
objects, and check that every field the mapping writes exists, has the right
type, accepts the picklist values used, is long enough for text whose values
are all known (such as {disposition}), and that ids in reference fields are
ids of an object the field references. Prints a pass/fail list (WARN lines,
such as a field whose text is cut to fit, do not fail); exit code 0 when
everything passed, 1 when a check failed, 78 when the file is invalid.
""",
    )

    ingest = commands.add_parser(
        "ingest",
        parents=[common, config],
        formatter_class=_Formatter,
        help="load past calls from a CDR/CSV export (backfill)",
        description="""\
Read call outcomes from a file your dialer exported (an Asterisk Master.csv CDR
or any CSV with a header row) and queue them like live ones, in the same spool
file the service sends from. Running it twice on the same file adds nothing:
each call is identified by its call id, and an interrupted run continues where
it stopped. Rows that cannot be read are kept aside (quarantine) and counted.

Settings come from the [[adapter]] section named with --adapter (type = "file"),
else from the options below; an option given on the command line wins.
""",
        epilog="""\
examples:
  dispo-sync ingest /var/log/asterisk/cdr-csv/Master.csv --tz America/Chicago
  dispo-sync ingest calls.csv --format csv --mapping call_id="Call ID" \\
      --mapping disposition=Result --mapping ended_at=End --disposition SALE=connected
  dispo-sync ingest export.csv --adapter crm-export

exit codes: 0 every row was read, 1 some rows were refused (see the summary)
or the file could not be read, 2 an option's value is wrong (the message names
it), 78 the configuration is invalid.
""",
    )
    ingest.add_argument("file", type=Path, metavar="FILE", help="the exported file")
    ingest.add_argument(
        "--adapter",
        metavar="NAME",
        help="take the format, column mapping, time zone and disposition codes from the "
        '[[adapter]] section with type = "file" and this name',
    )
    ingest.add_argument(
        "--format",
        dest="file_format",
        choices=["asterisk-cdr", "csv"],
        help="asterisk-cdr: Asterisk's Master.csv (no header row); csv: a file with a "
        "header row, columns named by --mapping (default: asterisk-cdr)",
    )
    ingest.add_argument(
        "--mapping",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="for --format csv: which header column holds FIELD (call_id, disposition, "
        "ended_at, lead_external_key, phone, ...); repeat for each field. A field whose "
        "column has the same name needs no --mapping",
    )
    ingest.add_argument(
        "--disposition",
        action="append",
        default=[],
        metavar="CODE=NAME",
        help="read the dialer's result CODE as disposition NAME (e.g. SALE=connected, "
        "WN=wrong_number); repeat for each code",
    )
    ingest.add_argument(
        "--direction",
        choices=["outbound", "inbound"],
        help="whether the file's calls were made by agents (outbound) or taken by them "
        "(inbound), when the file does not say (default: the adapter's, else outbound)",
    )
    ingest.add_argument(
        "--tz",
        metavar="ZONE",
        help="time zone of times written without an offset, e.g. America/Chicago (default: "
        "the adapter's tz, else [daemon] default_tz, which defaults to UTC)",
    )
    ingest.add_argument(
        "--source",
        metavar="NAME",
        help="the dialer name recorded with each call; part of its identity, so keep it the "
        "same across runs (default: the adapter's name, else cdr or csv)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dispo-sync`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `sim` forwards its arguments untouched (including --help); --log-format/--log-level
    # before it set how its log lines look.
    at = _command_at(args_list)
    if args_list[at : at + 1] == ["sim"]:
        from sfsim import run_sim_cli  # lazy: only sim and demo may import sfsim

        if at:
            _setup_logging(parser.parse_args([*args_list[:at], "sim"]), None, to_stderr=True)
        return int(run_sim_cli(args_list[at + 1 :]))
    args = parser.parse_args(args_list)
    return _dispatch(args, sys.stdout, sys.stderr)


def _command_at(args: Sequence[str]) -> int:
    """Where COMMAND is in ``args``: after the leading --log-format/--log-level options."""
    at = 0
    while at < len(args):
        if args[at] in ("--log-format", "--log-level"):
            at += 2
        elif args[at].startswith(("--log-format=", "--log-level=")):
            at += 1
        else:
            break
    return at


def _setup_logging(
    args: argparse.Namespace, settings: Settings | None, *, to_stderr: bool = False
) -> None:
    from daemon.logging import configure_logging

    fmt = args.log_format or (settings.log.format if settings else "auto")
    level = args.log_level or (settings.log.level if settings else "info")
    # Admin commands print their report on stdout; their log lines go to stderr.
    configure_logging(fmt, level, stream=sys.stderr if to_stderr else sys.stdout)


def _spool_path(args: argparse.Namespace) -> Path:
    if getattr(args, "spool", None) is not None:
        return Path(args.spool)
    return load_settings(args.config, only=("spool",)).spool.path


def _dispatch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        if args.command == "run":
            settings = load_settings(args.config)
            _setup_logging(args, settings)
            from daemon.runner import run_daemon

            return run_daemon(settings, config_path=args.config)
        if args.command == "check-config":
            settings = load_settings(args.config)
            _setup_logging(args, settings, to_stderr=True)
            from daemon.checks import check_config

            return check_config(settings, out)
        if args.command == "status":
            _setup_logging(args, None, to_stderr=True)
            from daemon.admin import status_command

            return status_command(_spool_path(args), out, as_json=args.json)
        if args.command == "dead-letters":
            _setup_logging(args, None, to_stderr=True)
            from daemon.admin import dead_letters_command

            return dead_letters_command(args, _spool_path(args), out, err)
        if args.command == "ingest":
            sections = ("spool", "rails", "log", "daemon", "adapter")
            settings = load_settings(args.config, only=sections)
            _setup_logging(args, settings, to_stderr=True)
            from daemon.admin import IngestOptions, ingest_command

            options = IngestOptions(
                adapter=args.adapter,
                file_format=args.file_format,
                mapping=tuple(args.mapping),
                dispositions=tuple(args.disposition),
                tz=args.tz,
                source=args.source,
                direction=args.direction,
            )
            return ingest_command(settings, args.file, out, err, options)
        if args.command == "demo":
            from daemon.demo import run_demo  # lazy: imports sfsim

            return run_demo(seconds=args.seconds, rate=args.rate, out=out)
    except SettingsError as exc:
        print(str(exc), file=err)
        return EXIT_CONFIG
    print(f"unknown command {args.command!r}", file=err)  # pragma: no cover - argparse refuses
    return EXIT_USAGE
