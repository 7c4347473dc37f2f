"""The JSON codec at the edge (orjson with json behind it) against the strict json reader it replaced."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import framing
from schemas.errors import ErrorCode
from schemas.framing import _load_json_strict, dump_json, load_json
from schemas.jsonrpc import Malformed
from tests.fuzz_support import BAD_UTF8, RAW_TOKENS, junk_texts

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**19, 10**300])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)


def same(a: Any, b: Any) -> bool:
    """Equal, with the same JSON types all the way down (1 is not 1.0, -0.0 is not 0.0)."""
    pending = [(a, b)]  # a loop, not recursion: some values are 700 deep
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if repr(x) != repr(y):
                return False
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif isinstance(x, dict):
            if list(x) != list(y):
                return False
            pending.extend((x[k], y[k]) for k in x)
        elif x != y:
            return False
    return True


def assert_as_strict(data: str | bytes) -> None:
    ours, reference = load_json(data), _load_json_strict(data)
    if isinstance(reference, Malformed):
        assert ours == reference, (data, ours, reference)
    else:
        assert same(ours, reference), (data, ours, reference)


@settings(max_examples=400)
@given(text=junk_texts)
def test_any_frame_decodes_exactly_as_the_strict_json_reader_does(text: str) -> None:
    assert_as_strict(text)
    assert_as_strict(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=400)
@given(value=json_values)
def test_any_json_value_reads_back_with_its_types(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False), dump_json(value)):
        assert_as_strict(text)
        assert_as_strict(text.encode("utf-8", "surrogatepass"))
        if not isinstance(load_json(text), Malformed):
            assert same(load_json(text), value)


@settings(max_examples=200)
@given(value=json_values, bad=st.sampled_from(BAD_UTF8), at=st.integers(0, 40))
def test_bytes_that_are_not_utf8_are_refused_by_both_readers(value: Any, bad: bytes, at: int) -> None:
    data = json.dumps({"id": 1, "x": value}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    spoiled = data[:at] + bad + data[at:]
    assert_as_strict(spoiled)
    assert isinstance(load_json(spoiled), Malformed)


@pytest.mark.parametrize("token", RAW_TOKENS)
def test_each_raw_token_in_a_small_frame_is_read_as_the_strict_reader_reads_it(token: str) -> None:
    for text in (token, f'{{"jsonrpc":"2.0","id":7,"result":{token}}}', f"[{token}]"):
        assert_as_strict(text)
        assert_as_strict(text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize(
    "token",
    ["NaN", "Infinity", "-Infinity", "1e400", "-1E+999", '"\\ud800"', '"\\udc00x"', '"\\ude00\\ud83d"'],
)
def test_the_strict_rules_hold_in_the_fast_path_and_keep_the_id(token: str) -> None:
    text = f'{{"jsonrpc":"2.0","id":7,"result":{token}}}'
    assert len(text) <= framing.FAST_MAX_CHARS
    for data in (text, text.encode()):
        value = load_json(data)
        assert isinstance(value, Malformed) and value.code == ErrorCode.PARSE_ERROR and value.id == 7, value


def test_integers_beyond_64_bits_stay_integers() -> None:
    for number in (2**64, -(2**63) - 1, 10**30, -(10**30)):
        value = load_json(f'{{"jsonrpc":"2.0","id":{number},"method":"x"}}')
        assert isinstance(value, dict) and value["id"] == number and type(value["id"]) is int


def test_nesting_orjson_would_take_but_json_cannot_write_back_is_read_by_json() -> None:
    text = "[" * 1000 + "]" * 1000  # orjson reads 1024 deep; json and the writers do not go as far
    assert_as_strict(text)
    value = load_json(text)
    if not isinstance(value, Malformed):
        dump_json(value)


def test_a_bom_is_skipped_in_bytes_and_refused_in_text() -> None:
    assert load_json(b'\xef\xbb\xbf{"a":1}') == {"a": 1}
    assert isinstance(load_json('\ufeff{"a":1}'), Malformed)


@settings(max_examples=300)
@given(value=json_values)
def test_what_is_written_reads_back_equal(value: Any) -> None:
    text = dump_json(value)
    assert same(json.loads(text), value)
    assert json.loads(text) == json.loads(json.dumps(value))


def test_what_orjson_cannot_write_is_written_by_json() -> None:
    assert dump_json({"id": 2**70}) == '{"id":1180591620717411303424}'
    assert dump_json({1: "a"}) == '{"1":"a"}'
    lone = dump_json({"name": "caf\udce9"})  # the transport refuses to send it (not UTF-8)
    assert lone == '{"name":"caf\udce9"}'
    deep: Any = 0
    for _ in range(300):
        deep = [deep]
    assert json.loads(dump_json(deep)) == deep


def test_non_ascii_is_kept_and_control_characters_are_escaped() -> None:
    assert dump_json({"a": "é\u2028\x00\n\x7f"}) == '{"a":"é\u2028\\u0000\\n\x7f"}'
    assert dump_json({"a": "é"}) == json.dumps({"a": "é"}, ensure_ascii=False, separators=(",", ":"))


def test_a_float_that_is_not_finite_is_never_written_as_bare_nan() -> None:
    text = dump_json({"x": math.nan, "y": math.inf})
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} on the wire"))


@pytest.mark.parametrize("text", ['{"a": "\ud800"}', '"x\udfff"', '{"\udc80": 1}'])
def test_text_holding_a_raw_lone_surrogate_is_read_as_json_reads_it(text: str) -> None:
    assert_as_strict(text)  # orjson refuses it; json takes it, as before (the transport's encode stops it)
