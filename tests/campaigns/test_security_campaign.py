"""The security campaign's checks (bench/campaign_security.py), each a CI test.

Every check runs the real daemon and sfsim as child processes (the constant-time
check runs the adapters in process with a spy on ``hmac.compare_digest``). The
systemd exposure score has its own test in tests/daemon/test_systemd_unit.py; the
body-limit and file-mode checks, covered in CI by the adapters' and the spool's own
tests, run here with the slow tests only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import campaign_security as sec


async def test_a_webhook_without_secret_stops_the_start(tmp_path: Path) -> None:
    r = await sec.check_refuses_start_without_secret(tmp_path)
    assert r["exit_status"] not in (None, 0) and r["message_names_missing_secret"], r
    assert r["trusted_true_accepts"], r
    assert r["ok"]


async def test_unauthenticated_requests_are_refused_and_nothing_kept(tmp_path: Path) -> None:
    r = await sec.check_unauthenticated(tmp_path)
    assert r["stored_after_unauthenticated"] == {"outcomes": 0, "quarantine": 0}, r
    assert r["ok"], r


async def test_every_credential_compare_is_constant_time(tmp_path: Path) -> None:
    r = await sec.check_constant_time(tmp_path)
    assert r["equality_on_secrets"] == [], r
    assert r["ok"], r


async def test_twilio_signatures_are_validated(tmp_path: Path) -> None:
    r = await sec.check_twilio_signature(tmp_path)
    assert r["statuses"]["signed"] == 200, r
    assert r["ok"], r


@pytest.mark.slow  # CI: tests/adapters/test_webhook_json.py::test_oversized_body_is_413
async def test_bodies_past_the_limit_get_413(tmp_path: Path) -> None:
    r = await sec.check_body_limit(tmp_path)
    assert r["ok"], r


async def test_tls_is_verified_and_ca_file_trusts_the_sim(tmp_path: Path) -> None:
    r = await sec.check_tls(tmp_path)
    assert r["without_ca_file"]["tasks_in_org"] == 0, r
    assert r["with_ca_file"]["tasks_in_org"] == 1, r
    assert r["ok"], r


async def test_no_secret_or_issued_token_in_any_debug_log_line(tmp_path: Path) -> None:
    r = await sec.check_secrets_in_logs(tmp_path)
    assert sum(r["hits"].values()) == 0 and r["access_token_hits"] == 0, r
    assert r["ok"], r


@pytest.mark.slow  # CI: tests/spool/test_spool_open.py::test_new_file_is_private_and_in_wal_mode
async def test_spool_files_are_0600(tmp_path: Path) -> None:
    r = await sec.check_file_modes(tmp_path)
    assert r["ok"], r


def test_the_leak_pattern_catches_a_plain_compare() -> None:
    """The static part of the constant-time check flags `==` on a secret (it can fail)."""
    assert sec.LEAK.search("if token == self._secret:")
    assert sec.LEAK.search("return given != signature")
    assert not sec.LEAK.search("hmac.compare_digest(token.encode(), secret.encode())")


@pytest.mark.slow
async def test_full_security_campaign(tmp_path: Path) -> None:
    r = await sec.run_security(tmp_path)
    assert r["ok"], r["failed"]
