"""The SOQL subset, as pure functions over a store: parsing, filters, ordering, errors."""

from __future__ import annotations

import pytest

from sfsim.errors import SfError
from sfsim.org import Org
from sfsim.soql import parse_query, run_query
from sfsim.store import RecordStore


@pytest.fixture
def store() -> RecordStore:
    s = Org().store
    for i, (name, phone, status) in enumerate(
        [
            ("O'Brien", "555-0001", "Open - Not Contacted"),
            ("Smith", "555-0002", "Working - Contacted"),
            ("smithers", None, "Working - Contacted"),
        ]
    ):
        s.insert(
            "Lead",
            {
                "LastName": name,
                "Company": f"C{i}",
                "Phone": phone,
                "Status": status,
                "Last_Call_At__c": f"2026-01-0{i + 1}T10:00:00Z",
            },
        )
    return s


def _names(store: RecordStore, soql: str) -> list[str]:
    return [r["LastName"] for r in run_query(store, parse_query(soql, store))]


def test_escaped_quotes_and_case_insensitive_equality(store: RecordStore) -> None:
    """'O\\'Brien' matches O'Brien; string equality ignores case as SOQL does."""
    assert _names(store, r"SELECT Id FROM Lead WHERE LastName = 'o\'brien'") == ["O'Brien"]


def test_in_list_of_escaped_literals_on_call_object() -> None:
    """CallObject IN ('...') with \\' and \\\\ escapes finds each Task by its exact stored
    value (a doubled quote is no SOQL escape: MALFORMED_QUERY)."""
    s = Org().store
    keys = ["vici:1", "vici:O'Neil", "vici:a\\b", "vici:50%_off", "vici:x'\\'y"]
    ids = {s.insert("Task", {"Subject": "s", "CallObject": k}): k for k in keys}
    s.insert("Task", {"Subject": "other", "CallObject": "vici:2"})
    literals = ", ".join("'" + k.replace("\\", "\\\\").replace("'", "\\'") + "'" for k in keys)
    soql = f"SELECT Id, CallObject FROM Task WHERE CallObject IN ({literals}, 'vici:none')"
    rows = run_query(s, parse_query(soql, s))
    assert {r["Id"]: r["CallObject"] for r in rows} == ids
    with pytest.raises(SfError) as exc:
        parse_query("SELECT Id FROM Task WHERE CallObject IN ('a:1', 'b''x')", s)
    assert exc.value.error_code == "MALFORMED_QUERY"


def test_like_order_offset_and_limit(store: RecordStore) -> None:
    """LIKE with %, ORDER BY DESC, OFFSET and LIMIT combine as in SOQL."""
    soql = "SELECT Id FROM Lead WHERE LastName LIKE 'smith%' ORDER BY LastName DESC"
    assert _names(store, soql) == ["smithers", "Smith"]
    assert _names(store, soql + " LIMIT 1 OFFSET 1") == ["Smith"]


def test_not_in_null_and_datetime_comparison(store: RecordStore) -> None:
    """NOT IN, != null and datetime literals compare like SOQL."""
    assert _names(store, "SELECT Id FROM Lead WHERE Status NOT IN ('Working - Contacted')") == [
        "O'Brien"
    ]
    assert _names(store, "SELECT Id FROM Lead WHERE Phone != null ORDER BY Phone") == [
        "O'Brien",
        "Smith",
    ]
    assert _names(
        store, "SELECT Id FROM Lead WHERE Last_Call_At__c > 2026-01-02T00:00:00Z ORDER BY LastName"
    ) == ["Smith", "smithers"]


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Lead WHERE", "MALFORMED_QUERY"),
        ("SELECT Id FROM Lead LIMIT many", "MALFORMED_QUERY"),
        ("SELECT Id FROM Lead WHERE LastName = 'unterminated", "MALFORMED_QUERY"),
        ("SELECT Id FROM Lead WHERE Last_Call_At__c = '2026-01-01'", "INVALID_FIELD"),
        ("SELECT Id, Bogus__c FROM Lead", "INVALID_FIELD"),
        ("SELECT Id FROM Bogus__c", "INVALID_TYPE"),
        ("", "MALFORMED_QUERY"),
    ],
)
def test_errors(store: RecordStore, soql: str, code: str) -> None:
    """Malformed or unknown queries fail with the code a real org uses."""
    with pytest.raises(SfError) as exc:
        parse_query(soql, store)
    assert exc.value.error_code == code
    assert exc.value.status == 400
