"""Feast values survive the trip into the JSON stored in records and back."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from feast.protos.feast.types.Value_pb2 import (
    NULL,
    BoolList,
    BytesList,
    DoubleList,
    FloatList,
    Int32List,
    Int64List,
    Map,
    StringList,
)
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from usp_feast.codec import from_json_value, oneof_for, to_json_value

pytestmark = pytest.mark.unit


def _stored(value: ValueProto) -> Any:
    """The JSON value as a record stores it: serialized and parsed again."""
    return orjson.loads(orjson.dumps(to_json_value(value)))


PLAIN = [
    (ValueType.STRING, ValueProto(string_val="paris"), "paris"),
    (ValueType.STRING, ValueProto(string_val=""), ""),
    (ValueType.INT32, ValueProto(int32_val=-7), -7),
    (ValueType.INT64, ValueProto(int64_val=2**53 + 1), 2**53 + 1),
    (ValueType.INT64, ValueProto(int64_val=0), 0),
    (ValueType.DOUBLE, ValueProto(double_val=0.1), 0.1),
    (ValueType.FLOAT, ValueProto(float_val=1.5), 1.5),
    (ValueType.BOOL, ValueProto(bool_val=True), True),
    (ValueType.BOOL, ValueProto(bool_val=False), False),
    (ValueType.UNIX_TIMESTAMP, ValueProto(unix_timestamp_val=1_795_712_400), 1_795_712_400),
    (ValueType.STRING_LIST, ValueProto(string_list_val=StringList(val=["a", "b"])), ["a", "b"]),
    (ValueType.INT32_LIST, ValueProto(int32_list_val=Int32List(val=[1, -2])), [1, -2]),
    (ValueType.INT64_LIST, ValueProto(int64_list_val=Int64List(val=[2**40])), [2**40]),
    (ValueType.INT64_LIST, ValueProto(int64_list_val=Int64List(val=[])), []),
    (ValueType.DOUBLE_LIST, ValueProto(double_list_val=DoubleList(val=[0.1, 2.5])), [0.1, 2.5]),
    (ValueType.FLOAT_LIST, ValueProto(float_list_val=FloatList(val=[0.5])), [0.5]),
    (ValueType.BOOL_LIST, ValueProto(bool_list_val=BoolList(val=[True, False])), [True, False]),
    (
        ValueType.UNIX_TIMESTAMP_LIST,
        ValueProto(unix_timestamp_list_val=Int64List(val=[1, 2])),
        [1, 2],
    ),
]


@pytest.mark.parametrize(("value_type", "value", "plain"), PLAIN)
def test_scalars_and_lists_are_stored_as_plain_json(
    value_type: ValueType, value: ValueProto, plain: Any
) -> None:
    # Plain JSON keeps records readable by the history API without Feast.
    assert _stored(value) == plain


@pytest.mark.parametrize(("value_type", "value", "plain"), PLAIN)
def test_scalars_and_lists_round_trip(value_type: ValueType, value: ValueProto, plain: Any) -> None:
    back = from_json_value(_stored(value), oneof_for(value_type))

    assert back == value
    # Zero, "", False and [] are values, not nulls.
    assert back.WhichOneof("val") == value.WhichOneof("val")


def test_a_float_keeps_its_single_precision_value() -> None:
    value = ValueProto(float_val=0.1)

    assert from_json_value(_stored(value), oneof_for(ValueType.FLOAT)) == value


@pytest.mark.parametrize("value", [ValueProto(), ValueProto(null_val=NULL)])
def test_null_is_stored_as_json_null_and_read_back_unset(value: ValueProto) -> None:
    assert _stored(value) is None

    back = from_json_value(None, oneof_for(ValueType.INT64))

    assert back.WhichOneof("val") is None


def test_bytes_round_trip_through_base64() -> None:
    value = ValueProto(bytes_val=b"\x00\xff\x1fpng")

    stored = _stored(value)

    assert oneof_for(ValueType.BYTES) is None
    assert stored == {"$b64": "AP8fcG5n"}
    assert from_json_value(stored, oneof_for(ValueType.BYTES)) == value


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        (ValueType.MAP, ValueProto(map_val=Map(val={"nights": ValueProto(int64_val=3)}))),
        (ValueType.BYTES_LIST, ValueProto(bytes_list_val=BytesList(val=[b"a", b"\x00"]))),
    ],
)
def test_types_without_a_plain_json_form_keep_their_proto(
    value_type: ValueType, value: ValueProto
) -> None:
    stored = _stored(value)

    assert oneof_for(value_type) is None
    assert list(stored) == ["$pb"]
    assert from_json_value(stored, oneof_for(value_type)) == value


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (True, ValueProto(bool_val=True)),
        (3, ValueProto(int64_val=3)),
        (1.5, ValueProto(double_val=1.5)),
        ("rome", ValueProto(string_val="rome")),
        (["a"], ValueProto(string_list_val=StringList(val=["a"]))),
    ],
)
def test_a_value_outside_the_schema_is_read_by_its_json_type(
    stored: Any, expected: ValueProto
) -> None:
    # A feature missing from the view's schema (e.g. just removed) must still read back.
    back = from_json_value(stored, None)

    assert back == expected
    assert back.WhichOneof("val") == expected.WhichOneof("val")
