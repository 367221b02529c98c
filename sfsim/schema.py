"""Describe-shaped schema: the org's objects and fields, as a real org's describe reports them.

The default schema (Account, Contact, Lead, Task, User) carries the standard call-logging fields of
reference §6 plus the dialer integration's custom fields. ``load_schema(path)`` reads describe JSON
exported from a real org instead: a list of DescribeSObjectResult objects, or
``{"sobjects": [...]}``.

``FieldDef`` / ``SObjectDef`` are the parsed view validation works from; ``SObjectDef.describe()``
returns the full describe dict (the original JSON for a loaded schema).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "STRING_TYPES",
    "FieldDef",
    "SObjectDef",
    "Schema",
    "SchemaError",
    "default_schema",
    "load_schema",
]

#: Field types whose values are strings with a character ``length``.
STRING_TYPES: Final = frozenset(
    {
        "string",
        "textarea",
        "phone",
        "email",
        "url",
        "picklist",
        "multipicklist",
        "combobox",
        "encryptedstring",
    }
)
_SOAP_TYPES: Final[dict[str, str]] = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "base64": "xsd:base64Binary",
    "time": "xsd:time",
}


class SchemaError(ValueError):
    """A schema file that cannot be used, naming the object/field that is wrong."""


@dataclass(frozen=True, slots=True)
class FieldDef:
    """What validation needs to know about one field (a subset of the describe Field)."""

    name: str
    type: str
    label: str
    length: int = 0
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    defaulted_on_create: bool = False
    unique: bool = False
    external_id: bool = False
    id_lookup: bool = False
    case_sensitive: bool = False
    restricted_picklist: bool = False
    picklist_values: tuple[str, ...] = ()
    default_picklist_value: str | None = None
    default_value: Any = None
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    digits: int = 0
    precision: int = 0
    scale: int = 0
    calculated: bool = False

    @property
    def required_on_create(self) -> bool:
        """Required on insert: not nillable, createable, not defaulted, not a boolean."""
        return (
            not self.nillable
            and self.createable
            and not self.defaulted_on_create
            and self.type != "boolean"
        )

    @property
    def is_upsert_key(self) -> bool:
        """Usable as the upsert key: External ID, or a standard idLookup field (§2.6)."""
        return self.external_id or self.id_lookup

    @property
    def polymorphic(self) -> bool:
        """A reference to more than one object type (Task.WhoId/WhatId)."""
        return len(self.reference_to) > 1

    @classmethod
    def from_describe(cls, obj: str, raw: Mapping[str, Any]) -> FieldDef:
        """Parse one describe Field object; raises SchemaError naming what is wrong."""
        try:
            name = str(raw["name"])
            ftype = str(raw["type"]).lower()
        except KeyError as exc:
            raise SchemaError(f"{obj}: a field has no {exc.args[0]!r}") from None
        values = []
        default_pick: str | None = None
        for entry in raw.get("picklistValues") or []:
            if entry.get("active", True):
                values.append(str(entry["value"]))
            if entry.get("defaultValue"):
                default_pick = str(entry["value"])
        return cls(
            name=name,
            type=ftype,
            label=str(raw.get("label") or name),
            length=int(raw.get("length") or 0),
            createable=bool(raw.get("createable", True)),
            updateable=bool(raw.get("updateable", True)),
            nillable=bool(raw.get("nillable", True)),
            defaulted_on_create=bool(raw.get("defaultedOnCreate", False)),
            unique=bool(raw.get("unique", False)),
            external_id=bool(raw.get("externalId", False)),
            id_lookup=bool(raw.get("idLookup", False)),
            case_sensitive=bool(raw.get("caseSensitive", False)),
            restricted_picklist=bool(raw.get("restrictedPicklist", False)),
            picklist_values=tuple(values),
            default_picklist_value=default_pick,
            default_value=raw.get("defaultValue"),
            reference_to=tuple(str(r) for r in raw.get("referenceTo") or ()),
            relationship_name=raw.get("relationshipName"),
            digits=int(raw.get("digits") or 0),
            precision=int(raw.get("precision") or 0),
            scale=int(raw.get("scale") or 0),
            calculated=bool(raw.get("calculated", False)),
        )


@dataclass(slots=True)
class SObjectDef:
    """One object: its describe dict and parsed fields, with case-insensitive lookups."""

    name: str
    key_prefix: str
    raw: dict[str, Any]
    fields: dict[str, FieldDef]
    _by_lower: dict[str, FieldDef] = field(default_factory=dict)
    _by_relationship: dict[str, FieldDef] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_lower = {name.lower(): f for name, f in self.fields.items()}
        self._by_relationship = {
            f.relationship_name.lower(): f for f in self.fields.values() if f.relationship_name
        }

    @property
    def label(self) -> str:
        return str(self.raw.get("label") or self.name)

    def field(self, name: str) -> FieldDef | None:
        """The field named ``name`` (API names are case-insensitive), or None."""
        return self._by_lower.get(name.lower())

    def relationship(self, name: str) -> FieldDef | None:
        """The reference field whose relationshipName is ``name`` (``Who`` -> WhoId), or None."""
        return self._by_relationship.get(name.lower())

    def describe(self, version: str) -> dict[str, Any]:
        """The describe result, with ``urls`` for the requested API version."""
        out = dict(self.raw)
        base = f"/services/data/v{version}/sobjects/{self.name}"
        out["urls"] = {
            "compactLayouts": f"{base}/describe/compactLayouts",
            "rowTemplate": f"{base}/{{ID}}",
            "approvalLayouts": f"{base}/describe/approvalLayouts",
            "defaultValues": f"{base}/defaultValues?recordTypeId&fields",
            "describe": f"{base}/describe",
            "quickActions": f"{base}/quickActions",
            "layouts": f"{base}/describe/layouts",
            "sobject": base,
        }
        return out

    def global_entry(self, version: str) -> dict[str, Any]:
        """The entry of this object in the describeGlobal ``sobjects`` list."""
        keys = (
            "activateable",
            "createable",
            "custom",
            "customSetting",
            "deletable",
            "deprecatedAndHidden",
            "feedEnabled",
            "keyPrefix",
            "label",
            "labelPlural",
            "layoutable",
            "mergeable",
            "mruEnabled",
            "name",
            "queryable",
            "replicateable",
            "retrieveable",
            "searchable",
            "triggerable",
            "undeletable",
            "updateable",
        )
        out = {k: self.raw.get(k) for k in keys}
        base = f"/services/data/v{version}/sobjects/{self.name}"
        out["urls"] = {
            "rowTemplate": f"{base}/{{ID}}",
            "describe": f"{base}/describe",
            "sobject": base,
        }
        return out


class Schema:
    """All objects of the org, looked up case-insensitively, and by key prefix."""

    def __init__(self, objects: Iterable[SObjectDef]) -> None:
        self.objects: dict[str, SObjectDef] = {}
        self._by_lower: dict[str, SObjectDef] = {}
        self._by_prefix: dict[str, SObjectDef] = {}
        for obj in objects:
            if obj.name.lower() in self._by_lower:
                raise SchemaError(f"{obj.name}: described twice")
            self.objects[obj.name] = obj
            self._by_lower[obj.name.lower()] = obj
            if obj.key_prefix:
                self._by_prefix[obj.key_prefix] = obj

    def get(self, name: str) -> SObjectDef | None:
        """The object named ``name`` (case-insensitive), or None."""
        return self._by_lower.get(name.lower())

    def by_prefix(self, key_prefix: str) -> SObjectDef | None:
        """The object whose ids start with ``key_prefix``, or None."""
        return self._by_prefix.get(key_prefix)

    @classmethod
    def from_describes(cls, describes: Iterable[Mapping[str, Any]]) -> Schema:
        """Build from describe results; raises SchemaError naming the bad object or field."""
        objs = []
        used_prefixes: set[str] = set()
        generated = 0
        for i, raw in enumerate(describes):
            if not isinstance(raw, Mapping):
                raise SchemaError(
                    f"sobjects[{i}]: expected a describe object, got {type(raw).__name__}"
                )
            name = raw.get("name")
            if not isinstance(name, str) or not name:
                raise SchemaError(f"sobjects[{i}]: missing 'name'")
            fields_raw = raw.get("fields")
            if not isinstance(fields_raw, list) or not fields_raw:
                raise SchemaError(f"{name}: missing 'fields' list")
            prefix = raw.get("keyPrefix")
            if not isinstance(prefix, str) or len(prefix) != 3:
                # Objects without a key prefix cannot be stored; mint a private one (a0X...).
                generated += 1
                prefix = f"a{generated:02d}"
                while prefix in used_prefixes:
                    generated += 1
                    prefix = f"a{generated:02d}"
            used_prefixes.add(prefix)
            fields = {}
            for fraw in fields_raw:
                if not isinstance(fraw, Mapping):
                    raise SchemaError(f"{name}: a field entry is not an object")
                fd = FieldDef.from_describe(name, fraw)
                fields[fd.name] = fd
            if "Id" not in fields:
                raise SchemaError(f"{name}: has no Id field")
            objs.append(SObjectDef(name=name, key_prefix=prefix, raw=dict(raw), fields=fields))
        return cls(objs)


def load_schema(path: str | Path) -> Schema:
    """Load describe JSON (a list of describe results, or ``{"sobjects": [...]}``) from a file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaError(f"{p}: cannot read schema file: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{p}: not valid JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("sobjects"), list):
        data = data["sobjects"]
    elif isinstance(data, dict) and "fields" in data:
        data = [data]
    if not isinstance(data, list):
        raise SchemaError(f'{p}: expected a list of describe results or {{"sobjects": [...]}}')
    try:
        return Schema.from_describes(data)
    except SchemaError as exc:
        raise SchemaError(f"{p}: {exc}") from None


# --------------------------------------------------------------------------------------------
# The default schema, built from compact definitions into full describe dicts.


def _pick(values: Iterable[str], default: str | None = None) -> list[dict[str, Any]]:
    return [
        {"active": True, "defaultValue": v == default, "label": v, "validFor": None, "value": v}
        for v in values
    ]


def _field(
    name: str,
    ftype: str,
    label: str,
    *,
    length: int = 0,
    c: bool = True,
    u: bool = True,
    n: bool = True,
    d: bool = False,
    unique: bool = False,
    ext: bool = False,
    lookup: bool = False,
    picklist: list[dict[str, Any]] | None = None,
    restricted: bool = False,
    ref: list[str] | None = None,
    rel: str | None = None,
    digits: int = 0,
    precision: int = 0,
    scale: int = 0,
    custom: bool = False,
    name_field: bool = False,
    calculated: bool = False,
) -> dict[str, Any]:
    """One describe Field with every documented key (reference §2.3)."""
    if ftype in ("id", "reference"):
        length = 18
    is_string_like = ftype in STRING_TYPES or ftype in ("id", "reference")
    return {
        "aggregatable": True,
        "aiPredictionField": False,
        "autoNumber": False,
        "byteLength": length * 3 if is_string_like else 0,
        "calculated": calculated,
        "calculatedFormula": None,
        "cascadeDelete": False,
        "caseSensitive": False,
        "compoundFieldName": None,
        "controllerName": None,
        "createable": c,
        "custom": custom,
        "defaultValue": False if ftype == "boolean" else None,
        "defaultValueFormula": None,
        "defaultedOnCreate": d,
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": digits,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": ext,
        "extraTypeInfo": None,
        "filterable": ftype != "textarea",
        "filteredLookupInfo": None,
        "groupable": ftype not in ("textarea", "datetime", "double"),
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": lookup,
        "inlineHelpText": None,
        "label": label,
        "length": length if is_string_like else 0,
        "mask": None,
        "maskType": None,
        "name": name,
        "nameField": name_field,
        "namePointing": bool(ref and len(ref) > 1),
        "nillable": n,
        "permissionable": n and ftype != "id" and (c or u),
        "picklistValues": picklist or [],
        "polymorphicForeignKey": bool(ref and len(ref) > 1),
        "precision": precision,
        "queryByDistance": False,
        "referenceTargetField": None,
        "referenceTo": ref or [],
        "relationshipName": rel,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": restricted,
        "scale": scale,
        "searchPrefilterable": False,
        "soapType": _SOAP_TYPES.get(ftype, "xsd:string"),
        "sortable": ftype != "textarea",
        "type": ftype,
        "unique": unique,
        "updateable": u,
        "writeRequiresMasterRead": False,
    }


def _system_fields(owner: bool = True) -> list[dict[str, Any]]:
    out = [
        _field("Id", "id", "Record ID", c=False, u=False, n=False, d=True, lookup=True),
        _field("IsDeleted", "boolean", "Deleted", c=False, u=False, n=False, d=True),
    ]
    if owner:
        out.append(
            _field("OwnerId", "reference", "Owner ID", n=False, d=True, ref=["User"], rel="Owner")
        )
    out += [
        _field("CreatedDate", "datetime", "Created Date", c=False, u=False, n=False, d=True),
        _field(
            "CreatedById",
            "reference",
            "Created By ID",
            c=False,
            u=False,
            n=False,
            d=True,
            ref=["User"],
            rel="CreatedBy",
        ),
        _field(
            "LastModifiedDate", "datetime", "Last Modified Date", c=False, u=False, n=False, d=True
        ),
        _field(
            "LastModifiedById",
            "reference",
            "Last Modified By ID",
            c=False,
            u=False,
            n=False,
            d=True,
            ref=["User"],
            rel="LastModifiedBy",
        ),
        _field("SystemModstamp", "datetime", "System Modstamp", c=False, u=False, n=False, d=True),
    ]
    return out


def _object(
    name: str,
    label: str,
    plural: str,
    prefix: str,
    fields: list[dict[str, Any]],
    children: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A describe result with the documented top-level keys (reference §2.3)."""
    return {
        "actionOverrides": [],
        "activateable": False,
        "associateEntityType": None,
        "associateParentEntity": None,
        "childRelationships": children or [],
        "compactLayoutable": True,
        "createable": True,
        "custom": False,
        "customSetting": False,
        "dataTranslationEnabled": False,
        "deepCloneable": False,
        "defaultImplementation": None,
        "deletable": name != "User",
        "deprecatedAndHidden": False,
        "extendedBy": None,
        "extendsInterfaces": None,
        "feedEnabled": True,
        "fields": fields,
        "hasSubtypes": False,
        "implementedBy": None,
        "implementsInterfaces": None,
        "isInterface": False,
        "isSubtype": False,
        "keyPrefix": prefix,
        "label": label,
        "labelPlural": plural,
        "layoutable": True,
        "listviewable": None,
        "lookupLayoutable": None,
        "mergeable": name in ("Account", "Contact", "Lead"),
        "mruEnabled": True,
        "name": name,
        "namedLayoutInfos": [],
        "networkScopeFieldName": None,
        "queryable": True,
        "recordTypeInfos": [
            {
                "active": True,
                "available": True,
                "defaultRecordTypeMapping": True,
                "developerName": "Master",
                "master": True,
                "name": "Master",
                "recordTypeId": "012000000000000AAA",
                "urls": {},
            }
        ],
        "replicateable": True,
        "retrieveable": True,
        "searchLayoutable": True,
        "searchable": True,
        "sobjectDescribeOption": "FULL",
        "supportedScopes": [
            {"label": "All", "name": "everything"},
            {"label": "My", "name": "mine"},
        ],
        "triggerable": True,
        "undeletable": name != "User",
        "updateable": True,
    }


def _child(obj: str, field_name: str, rel: str | None) -> dict[str, Any]:
    return {
        "cascadeDelete": False,
        "childSObject": obj,
        "deprecatedAndHidden": False,
        "field": field_name,
        "junctionIdListNames": [],
        "junctionReferenceTo": [],
        "relationshipName": rel,
        "restrictedDelete": False,
    }


TASK_STATUSES: Final = (
    "Not Started",
    "In Progress",
    "Completed",
    "Waiting on someone else",
    "Deferred",
)
#: Task Status values that mean IsClosed (query TaskStatus in a real org).
CLOSED_TASK_STATUSES: Final = frozenset({"Completed"})
LEAD_STATUSES: Final = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)


def _default_describes() -> list[dict[str, Any]]:
    f = _field
    account = _object(
        "Account",
        "Account",
        "Accounts",
        "001",
        [
            *_system_fields(),
            f("Name", "string", "Account Name", length=255, n=False, name_field=True),
            f(
                "Type",
                "picklist",
                "Account Type",
                length=255,
                picklist=_pick(
                    ["Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other"]
                ),
            ),
            f("Phone", "phone", "Account Phone", length=40),
            f("Website", "url", "Website", length=255),
            f(
                "Industry",
                "picklist",
                "Industry",
                length=255,
                picklist=_pick(
                    ["Banking", "Education", "Healthcare", "Retail", "Technology", "Other"]
                ),
            ),
            f("AccountNumber", "string", "Account Number", length=40),
            f("BillingCity", "string", "Billing City", length=40),
            f("BillingCountry", "string", "Billing Country", length=80),
            f("Description", "textarea", "Account Description", length=32000),
        ],
        children=[_child("Contact", "AccountId", "Contacts"), _child("Task", "WhatId", "Tasks")],
    )
    contact = _object(
        "Contact",
        "Contact",
        "Contacts",
        "003",
        [
            *_system_fields(),
            f("AccountId", "reference", "Account ID", ref=["Account"], rel="Account"),
            f("FirstName", "string", "First Name", length=40),
            f("LastName", "string", "Last Name", length=80, n=False),
            f(
                "Name",
                "string",
                "Full Name",
                length=121,
                c=False,
                u=False,
                n=False,
                name_field=True,
            ),
            f("Title", "string", "Title", length=128),
            f("Phone", "phone", "Business Phone", length=40),
            f("MobilePhone", "phone", "Mobile Phone", length=40),
            f("Email", "email", "Email", length=80, lookup=True),
            f("DoNotCall", "boolean", "Do Not Call", n=False, d=True),
            f("HasOptedOutOfEmail", "boolean", "Email Opt Out", n=False, d=True),
            f("Description", "textarea", "Contact Description", length=32000),
        ],
        children=[_child("Task", "WhoId", "Tasks")],
    )
    lead = _object(
        "Lead",
        "Lead",
        "Leads",
        "00Q",
        [
            *_system_fields(),
            f("FirstName", "string", "First Name", length=40),
            f("LastName", "string", "Last Name", length=80, n=False),
            f(
                "Name",
                "string",
                "Full Name",
                length=121,
                c=False,
                u=False,
                n=False,
                name_field=True,
            ),
            f("Title", "string", "Title", length=128),
            f("Company", "string", "Company", length=255, n=False),
            f("Phone", "phone", "Phone", length=40),
            f("MobilePhone", "phone", "Mobile Phone", length=40),
            f("Email", "email", "Email", length=80, lookup=True),
            # Lead.Status is not restricted (§6.2); values come from LeadStatus in a real org.
            f(
                "Status",
                "picklist",
                "Status",
                length=255,
                n=False,
                d=True,
                picklist=_pick(LEAD_STATUSES, "Open - Not Contacted"),
            ),
            f(
                "LeadSource",
                "picklist",
                "Lead Source",
                length=255,
                picklist=_pick(
                    ["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"]
                ),
            ),
            f("DoNotCall", "boolean", "Do Not Call", n=False, d=True),
            f("HasOptedOutOfEmail", "boolean", "Email Opt Out", n=False, d=True),
            f("IsConverted", "boolean", "Converted", c=False, u=False, n=False, d=True),
            f("ConvertedDate", "date", "Converted Date", c=False, u=False),
            f(
                "ConvertedContactId",
                "reference",
                "Converted Contact ID",
                c=False,
                u=False,
                ref=["Contact"],
                rel="ConvertedContact",
            ),
            f(
                "ConvertedAccountId",
                "reference",
                "Converted Account ID",
                c=False,
                u=False,
                ref=["Account"],
                rel="ConvertedAccount",
            ),
            f("Description", "textarea", "Description", length=32000),
            f(
                "Dialer_Lead_Id__c",
                "string",
                "Dialer Lead Id",
                length=255,
                unique=True,
                ext=True,
                lookup=True,
                custom=True,
            ),
            f("Last_Call_Outcome__c", "string", "Last Call Outcome", length=255, custom=True),
            f("Last_Call_At__c", "datetime", "Last Call At", custom=True),
            f("Callback_At__c", "datetime", "Callback At", custom=True),
        ],
        children=[_child("Task", "WhoId", "Tasks")],
    )
    task = _object(
        "Task",
        "Task",
        "Tasks",
        "00T",
        [
            *_system_fields(owner=False),
            f("WhoId", "reference", "Name ID", ref=["Contact", "Lead"], rel="Who"),
            f("WhatId", "reference", "Related To ID", ref=["Account"], rel="What"),
            f(
                "Subject",
                "combobox",
                "Subject",
                length=255,
                picklist=_pick(["Call", "Send Letter", "Send Quote", "Other"]),
            ),
            f("ActivityDate", "date", "Due Date Only"),
            f(
                "Status",
                "picklist",
                "Status",
                length=255,
                n=False,
                d=True,
                picklist=_pick(TASK_STATUSES, "Not Started"),
            ),
            f(
                "Priority",
                "picklist",
                "Priority",
                length=20,
                n=False,
                d=True,
                picklist=_pick(["High", "Normal", "Low"], "Normal"),
            ),
            f("OwnerId", "reference", "Assigned To ID", n=False, d=True, ref=["User"], rel="Owner"),
            f("Description", "textarea", "Description", length=32000),
            f(
                "Type",
                "picklist",
                "Type",
                length=255,
                picklist=_pick(["Call", "Meeting", "Email", "Other"]),
            ),
            # TaskSubtype: restricted, create-only (§6.1, §7.14).
            f(
                "TaskSubtype",
                "picklist",
                "Task Subtype",
                length=40,
                u=False,
                restricted=True,
                picklist=[
                    *_pick(["Task", "Email", "LinkedIn", "List Email", "Call"]),
                    # Cadence is internal and cannot be set (§6.1): listed, not active.
                    {
                        "active": False,
                        "defaultValue": False,
                        "label": "Cadence",
                        "validFor": None,
                        "value": "Cadence",
                    },
                ],
            ),
            f("CallDurationInSeconds", "int", "Call Duration", digits=8),
            f(
                "CallType",
                "picklist",
                "Call Type",
                length=40,
                restricted=True,
                picklist=_pick(["Inbound", "Internal", "Outbound"]),
            ),
            f("CallDisposition", "string", "Call Result", length=255),
            f("CallObject", "string", "Call Object Identifier", length=255),
            f("IsClosed", "boolean", "Closed", c=False, u=False, n=False, d=True),
            f("IsHighPriority", "boolean", "High Priority", c=False, u=False, n=False, d=True),
            f("IsArchived", "boolean", "Archived", c=False, u=False, n=False, d=True),
            f("CompletedDateTime", "datetime", "Completed Date/Time", c=False, u=False),
            f(
                "AccountId",
                "reference",
                "Account ID",
                c=False,
                u=False,
                ref=["Account"],
                rel="Account",
            ),
            # [U] whether Activity custom fields take External ID + Unique (§2.6): modelled as both,
            # which is what the integration needs and the stricter (dedup-enforcing) reading.
            # caseSensitive false, Salesforce's default for a Unique text field: "ABC" and "abc"
            # are the same key, for upsert matching and for DUPLICATE_VALUE alike.
            f(
                "Call_Id__c",
                "string",
                "Call Id",
                length=255,
                unique=True,
                ext=True,
                lookup=True,
                custom=True,
            ),
        ],
    )
    user = _object(
        "User",
        "User",
        "Users",
        "005",
        [
            f("Id", "id", "User ID", c=False, u=False, n=False, d=True, lookup=True),
            f("Username", "string", "Username", length=80, n=False, unique=True, lookup=True),
            f("FirstName", "string", "First Name", length=40),
            f("LastName", "string", "Last Name", length=80, n=False),
            f(
                "Name",
                "string",
                "Full Name",
                length=121,
                c=False,
                u=False,
                n=False,
                name_field=True,
            ),
            f("Email", "email", "Email", length=128, n=False),
            f("Alias", "string", "Alias", length=8, n=False),
            f("IsActive", "boolean", "Active", n=False, d=True),
            f(
                "TimeZoneSidKey",
                "picklist",
                "Time Zone",
                length=40,
                n=False,
                restricted=True,
                picklist=_pick(
                    [
                        "America/New_York",
                        "America/Chicago",
                        "America/Los_Angeles",
                        "Europe/London",
                        "Europe/Paris",
                        "GMT",
                    ]
                ),
            ),
            f("CreatedDate", "datetime", "Created Date", c=False, u=False, n=False, d=True),
            f(
                "LastModifiedDate",
                "datetime",
                "Last Modified Date",
                c=False,
                u=False,
                n=False,
                d=True,
            ),
            f("SystemModstamp", "datetime", "System Modstamp", c=False, u=False, n=False, d=True),
        ],
    )
    return [account, contact, lead, task, user]


def default_schema(*, without: Iterable[str] = ()) -> Schema:
    """The built-in schema: Account, Contact, Lead, Task and User with call-logging fields.

    ``without``: ``"Object.Field"`` names to leave out, for an org that lacks them (e.g.
    ``"Task.Call_Id__c"``: no Task external ID field). An unknown name is a SchemaError.
    """
    drop = set(without)
    describes = _default_describes()
    for raw in describes:
        names = {f"{raw['name']}.{f['name']}" for f in raw["fields"]}
        gone = drop & names
        if gone:
            raw["fields"] = [f for f in raw["fields"] if f"{raw['name']}.{f['name']}" not in gone]
            drop -= gone
    if drop:
        raise SchemaError(f"default schema has no field {', '.join(sorted(drop))}")
    return Schema.from_describes(describes)
