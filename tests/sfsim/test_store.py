"""The record store: validation shared by every write path, ids, upsert and rollback."""

from __future__ import annotations

import pytest

from sfsim.errors import SfError
from sfsim.ids import IdGenerator, checksum, normalize_id
from sfsim.org import Org
from sfsim.store import RecordStore


@pytest.fixture
def store() -> RecordStore:
    return Org().store


def _lead(store: RecordStore, **extra: object) -> str:
    return store.insert("Lead", {"LastName": "Doe", "Company": "Acme", **extra})


def _code(exc: pytest.ExceptionInfo[SfError]) -> str:
    return exc.value.error_code


def test_ids_have_key_prefix_and_valid_case_safe_suffix() -> None:
    """Minted ids are 18 characters, start with the object's key prefix and carry the suffix."""
    gen = IdGenerator()
    for prefix in ("00Q", "00T", "003", "001", "750"):
        rid = gen.new(prefix)
        assert len(rid) == 18 and rid.startswith(prefix)
        assert rid[15:] == checksum(rid[:15])


def test_known_salesforce_id_checksum() -> None:
    """The suffix algorithm matches a real documented id (001D000000IqhSL -> IAZ)."""
    assert checksum("001D000000IqhSL") == "IAZ"
    assert normalize_id("001D000000IqhSL") == "001D000000IqhSLIAZ"
    assert normalize_id("001d000000iqhsliaz") == "001D000000IqhSLIAZ"


def test_malformed_ids_are_rejected() -> None:
    """Wrong length, bad characters and impossible suffixes are not ids."""
    assert normalize_id("001D000000IqhS") is None
    assert normalize_id("001D000000IqhSL-AZ") is None
    assert normalize_id("00100000000000099Z") is None  # suffix marks a digit as upper case


def test_insert_fills_defaults_and_system_fields(store: RecordStore) -> None:
    """A created Lead gets its default Status, owner, timestamps and computed Name."""
    rid = _lead(store, FirstName="Jane")
    rec = store.get("Lead", rid)
    assert rec is not None
    assert rec["Status"] == "Open - Not Contacted"
    assert rec["OwnerId"] == store.user_id
    assert rec["Name"] == "Jane Doe"
    assert rec["CreatedDate"].endswith("+0000")
    assert rec["DoNotCall"] is False


@pytest.mark.parametrize(
    ("obj", "fields", "code", "err_fields"),
    [
        ("Task", {"Equipo": 1}, "INVALID_FIELD", []),
        ("Task", {"IsClosed": True}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["IsClosed"]),
        ("Task", {"CallType": "Sideways"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["CallType"]),
        ("Task", {"CallDisposition": "x" * 256}, "STRING_TOO_LONG", ["CallDisposition"]),
        ("Lead", {"LastName": "Doe"}, "REQUIRED_FIELD_MISSING", ["Company"]),
        ("Task", {"WhoId": "not-an-id"}, "MALFORMED_ID", ["WhoId"]),
        ("Task", {"WhoId": "00Q8d0000000001"}, "INVALID_CROSS_REFERENCE_KEY", ["WhoId"]),
        ("Task", {"WhoId": "001D000000IqhSL"}, "FIELD_INTEGRITY_EXCEPTION", ["WhoId"]),
        ("Task", {"CallDurationInSeconds": "long"}, "JSON_PARSER_ERROR", ["CallDurationInSeconds"]),
        (
            "Lead",
            {"LastName": "D", "Company": "C", "Last_Call_At__c": "yesterday"},
            "JSON_PARSER_ERROR",
            ["Last_Call_At__c"],
        ),
        ("Task", {"Id": "00T8d0000000001"}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["Id"]),
        (
            "Task",
            {"CallDurationInSeconds": 123456789},
            "NUMBER_OUTSIDE_VALID_RANGE",
            ["CallDurationInSeconds"],
        ),
        (
            "Lead",
            {"LastName": "D", "Company": "C", "Email": "not-an-email"},
            "INVALID_EMAIL_ADDRESS",
            ["Email"],
        ),
    ],
)
def test_insert_errors(
    store: RecordStore, obj: str, fields: dict[str, object], code: str, err_fields: list[str]
) -> None:
    """Each invalid create fails with the documented error code and fields."""
    with pytest.raises(SfError) as exc:
        store.insert(obj, fields)
    assert _code(exc) == code
    assert exc.value.fields == err_fields
    assert exc.value.status == 400


def test_a_reference_to_a_deleted_record_says_entity_is_deleted(store: RecordStore) -> None:
    """A WhoId naming a Lead in the recycle bin fails ENTITY_IS_DELETED with no field, the
    same answer as an update of a deleted record itself (real orgs do not say which)."""
    lead = store.insert("Lead", {"LastName": "D", "Company": "C"})
    task = store.insert("Task", {"Subject": "x"})
    store.delete("Lead", lead)
    with pytest.raises(SfError) as on_reference:
        store.update("Task", task, {"WhoId": lead})
    store.delete("Task", task)
    with pytest.raises(SfError) as on_record:
        store.update("Task", task, {"Subject": "y"})
    for exc in (on_reference, on_record):
        assert (_code(exc), exc.value.fields) == ("ENTITY_IS_DELETED", [])


def test_restricted_picklist_message_uses_label(store: RecordStore) -> None:
    """The restricted-picklist message starts with the field label, as a real org's does."""
    with pytest.raises(SfError) as exc:
        store.insert("Task", {"CallType": "Foo"})
    assert exc.value.message == "Call Type: bad value for restricted picklist field: Foo"


def test_create_only_field_refused_on_update(store: RecordStore) -> None:
    """TaskSubtype may be set on create but not on update."""
    tid = store.insert("Task", {"Subject": "Call", "TaskSubtype": "Call"})
    with pytest.raises(SfError) as exc:
        store.update("Task", tid, {"TaskSubtype": "Call"})
    assert _code(exc) == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_update_null_clears_and_required_null_fails(store: RecordStore) -> None:
    """None clears a nillable field; None on a required field is REQUIRED_FIELD_MISSING."""
    lid = _lead(store, Phone="+15550100")
    store.update("Lead", lid, {"Phone": None})
    assert store.get("Lead", lid)["Phone"] is None  # type: ignore[index]
    with pytest.raises(SfError) as exc:
        store.update("Lead", lid, {"Company": None})
    assert _code(exc) == "REQUIRED_FIELD_MISSING"


def test_unique_external_id_rejects_duplicates_case_insensitively(store: RecordStore) -> None:
    """A second record with the same unique external id (any case) is DUPLICATE_VALUE."""
    tid = store.insert("Task", {"Call_Id__c": "five9:ABC"})
    with pytest.raises(SfError) as exc:
        store.insert("Task", {"Call_Id__c": "FIVE9:abc"})
    assert _code(exc) == "DUPLICATE_VALUE"
    assert tid in exc.value.message


def test_upsert_creates_then_updates(store: RecordStore) -> None:
    """Upsert by external id creates once, then updates the same record."""
    rid, created = store.upsert("Task", "Call_Id__c", "c-1", {"Subject": "Call"})
    assert created
    rid2, created2 = store.upsert("Task", "Call_Id__c", "c-1", {"CallDisposition": "Busy"})
    assert (rid2, created2) == (rid, False)
    rec = store.get("Task", rid)
    assert rec is not None and rec["CallDisposition"] == "Busy" and rec["Subject"] == "Call"


def test_upsert_unknown_or_non_external_field_is_not_found(store: RecordStore) -> None:
    """Upsert on a field that is not an External ID is 404 NOT_FOUND."""
    for field_name in ("Nope__c", "Subject"):
        with pytest.raises(SfError) as exc:
            store.upsert("Task", field_name, "x", {})
        assert exc.value.status == 404 and _code(exc) == "NOT_FOUND"


def test_upsert_several_matches_is_300(store: RecordStore) -> None:
    """Upsert on a non-unique idLookup field matching two records answers 300."""
    _lead(store, Email="a@example.com")
    _lead(store, Email="a@example.com")
    with pytest.raises(SfError) as exc:
        store.upsert("Lead", "Email", "a@example.com", {"Phone": "1"})
    assert exc.value.status == 300
    assert len(exc.value.matches) == 2  # type: ignore[attr-defined]


def test_delete_then_again_is_entity_is_deleted(store: RecordStore) -> None:
    """Deleting a deleted record reports ENTITY_IS_DELETED."""
    lid = _lead(store)
    store.delete("Lead", lid)
    assert store.get("Lead", lid) is None
    with pytest.raises(SfError) as exc:
        store.delete("Lead", lid)
    assert _code(exc) == "ENTITY_IS_DELETED"


def test_transaction_rolls_back_every_write(store: RecordStore) -> None:
    """An error inside transaction() undoes inserts, updates and deletes made in it."""
    keep = _lead(store, Phone="1")
    gone = _lead(store)
    before = store.counts()["Lead"]
    with pytest.raises(SfError), store.transaction():
        _lead(store)
        store.update("Lead", keep, {"Phone": "2"})
        store.delete("Lead", gone)
        store.insert("Lead", {"LastName": "x"})  # fails: Company missing
    assert store.counts()["Lead"] == before
    assert store.get("Lead", keep)["Phone"] == "1"  # type: ignore[index]
    assert store.get("Lead", gone) is not None


def test_task_status_drives_isclosed(store: RecordStore) -> None:
    """Setting a closed Status sets IsClosed and CompletedDateTime, as a real org computes."""
    tid = store.insert("Task", {"Status": "In Progress"})
    assert store.get("Task", tid)["IsClosed"] is False  # type: ignore[index]
    store.update("Task", tid, {"Status": "Completed"})
    rec = store.get("Task", tid)
    assert rec is not None and rec["IsClosed"] is True and rec["CompletedDateTime"]


def test_lock_hook_fails_writes(store: RecordStore) -> None:
    """The lock hook turns a write into UNABLE_TO_LOCK_ROW and nothing is written."""
    lid = _lead(store, Phone="1")
    store.lock_hook = lambda obj, rid: True
    with pytest.raises(SfError) as exc:
        store.update("Lead", lid, {"Phone": "2"})
    assert _code(exc) == "UNABLE_TO_LOCK_ROW"
    store.lock_hook = None
    assert store.get("Lead", lid)["Phone"] == "1"  # type: ignore[index]


def test_bulk_columns_and_cells(store: RecordStore) -> None:
    """Relationship columns resolve by external id; empty cells are ignored; #N/A clears."""
    lid = _lead(store, Dialer_Lead_Id__c="L-7", Phone="5")
    cols = [
        store.resolve_column("Task", h)
        for h in (
            "Call_Id__c",
            "Lead:Who.Dialer_Lead_Id__c",
            "CallDurationInSeconds",
            "Description",
        )
    ]
    fields = store.csv_row_to_fields(cols, ["c-9", "L-7", "42", ""], creating=True)
    assert fields == {"Call_Id__c": "c-9", "WhoId": lid, "CallDurationInSeconds": 42}
    cells = store.csv_row_to_fields(cols, ["c-9", "", "#N/A", ""], creating=False)
    assert cells == {"Call_Id__c": "c-9", "CallDurationInSeconds": None}
    with pytest.raises(SfError):
        store.resolve_column("Task", "Who.Dialer_Lead_Id__c")  # polymorphic needs Lead:
    with pytest.raises(SfError) as exc:
        store.csv_row_to_fields(cols, ["c-9", "L-404", "", ""], creating=True)
    assert _code(exc) == "INVALID_FIELD"
    with pytest.raises(SfError) as exc:
        store.csv_row_to_fields(cols, ["c-9", "", "ten", ""], creating=True)
    assert _code(exc) == "INVALID_TYPE_ON_FIELD_IN_RECORD"


def test_dump_and_load_round_trip() -> None:
    """Records survive dump/load, and new ids do not collide with loaded ones."""
    org = Org()
    lid = _lead(org.store, Dialer_Lead_Id__c="L-1")
    state = org.store.dump()
    other = Org()
    other.store.load(state)
    assert other.store.get("Lead", lid) is not None
    assert other.store.find("Lead", "Dialer_Lead_Id__c", "l-1") == [lid]
    new = _lead(other.store)
    assert new != lid and other.store.ids.sequence_of(new) > other.store.ids.sequence_of(lid)


def test_on_demand_index_follows_writes_and_rollback(store: RecordStore) -> None:
    """A Phone lookup builds an index that inserts, updates, deletes and rollbacks keep right."""
    a = _lead(store, Phone="555-0001")
    assert store.find("Lead", "Phone", "555-0001") == [a]
    b = _lead(store, Phone="555-0001")
    store.update("Lead", a, {"Phone": "555-0002"})
    assert store.find("Lead", "Phone", "555-0001") == [b]
    assert store.find("Lead", "Phone", "555-0002") == [a]
    store.delete("Lead", b)
    assert store.find("Lead", "Phone", "555-0001") == []
    with pytest.raises(SfError), store.transaction():
        store.update("Lead", a, {"Phone": "555-0009"})
        store.insert("Lead", {"LastName": "x"})  # fails: rolls the update back
    assert store.find("Lead", "Phone", "555-0002") == [a]
    assert store.find("Lead", "Phone", "555-0009") == []
