"""Field mapping: how a ``CallOutcome`` becomes Salesforce Task and Lead fields.

>>> mapping = load_mapping(None)                 # the built-in default.toml
>>> fields = mapping.task_record(outcome, who_id="00Q...")   # doctest: +SKIP
>>> problems = mapping.check_against_describe({"Task": task_describe, "Lead": lead_describe})
... # doctest: +SKIP
"""

from ._template import CLEAR, Clear
from .model import CALL_KEY_FIELD, LeadNotFound, Mapping, MappingError, load_mapping, parse_mapping

__all__ = [
    "CALL_KEY_FIELD",
    "CLEAR",
    "Clear",
    "LeadNotFound",
    "Mapping",
    "MappingError",
    "load_mapping",
    "parse_mapping",
]
