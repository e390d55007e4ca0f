"""Conversion between Feast ``ValueProto`` and the JSON values stored in records.

Scalars and lists are stored as plain JSON (readable by the history API without Feast);
types with no natural JSON form (maps, structs, ...) keep their serialized proto.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

__all__ = ["from_json_value", "oneof_for", "to_json_value"]

_PLAIN_SCALARS = {
    "string_val",
    "int32_val",
    "int64_val",
    "double_val",
    "float_val",
    "bool_val",
    "unix_timestamp_val",
}
_PLAIN_LISTS = {f"{name[:-4]}_list_val" for name in _PLAIN_SCALARS}
_PROTO_KEY = "$pb"


def to_json_value(value: ValueProto) -> Any:
    """The JSON form of a Feast value (None for an unset value)."""
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    if kind in _PLAIN_SCALARS:
        return getattr(value, kind)
    if kind in _PLAIN_LISTS:
        return list(getattr(value, kind).val)
    if kind == "bytes_val":
        return {"$b64": base64.b64encode(value.bytes_val).decode()}
    return {_PROTO_KEY: base64.b64encode(value.SerializeToString()).decode()}


def oneof_for(value_type: ValueType) -> str | None:
    """The ``ValueProto`` field that holds values of a Feast value type, if it is plain."""
    name = f"{value_type.name.lower()}_val"
    if name in _PLAIN_SCALARS or name in _PLAIN_LISTS:
        return name
    return None


def from_json_value(stored: Any, oneof: str | None) -> ValueProto:
    """Rebuild a Feast value from its JSON form, given the field's ``ValueProto`` oneof."""
    if stored is None:
        return ValueProto()
    if isinstance(stored, Mapping):
        if _PROTO_KEY in stored:
            return ValueProto.FromString(base64.b64decode(stored[_PROTO_KEY]))
        if "$b64" in stored:
            return ValueProto(bytes_val=base64.b64decode(stored["$b64"]))
    if oneof is None:
        oneof = _infer_oneof(stored)
    if oneof in _PLAIN_LISTS:
        holder = ValueProto()
        getattr(holder, oneof).val.extend(stored)
        return holder
    return ValueProto(**{oneof: stored})


def _infer_oneof(stored: Any) -> str:
    # Only reached for a feature missing from the view's schema; keeps reads total.
    if isinstance(stored, bool):
        return "bool_val"
    if isinstance(stored, int):
        return "int64_val"
    if isinstance(stored, float):
        return "double_val"
    if isinstance(stored, list):
        return "string_list_val"
    return "string_val"
