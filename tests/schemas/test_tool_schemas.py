"""The JSON Schema a model sees and the client's validation agree exactly, for every tool.

(a) Whatever the published schema accepts, the client's strict pydantic model
accepts (instances generated from the schema itself, see schema_strategy.py).
(b) Whatever the schema refuses, the client refuses: arbitrary JSON objects over
the tools' field names, valid params with one field replaced by any JSON value,
and a table of known traps, each judged by both (jsonschema, draft 2020-12, and
the model) with the same verdict required.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from schemas.framing import load_json
from schemas.jsonrpc import Malformed
from schemas.tools import TOOLS, ToolSpec
from tests.schemas.schema_strategy import from_schema

SPECS = list(TOOLS.values())
NAMES = [spec.name for spec in SPECS]


def _schema_accepts(spec: ToolSpec, value: object) -> bool:
    return Draft202012Validator(spec.parameters_schema()).is_valid(value)


def _client_accepts(spec: ToolSpec, value: object) -> bool:
    # What the client's dispatcher (_validated) and the hub's REST route both do.
    try:
        spec.params.model_validate(value)
    except ValidationError:
        return False
    return True


def _as_json(value: object) -> Any:
    """``value`` as it arrives after a JSON round trip (what both validators see on the wire)."""
    return json.loads(json.dumps(value))


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    for spec in SPECS:
        Draft202012Validator.check_schema(spec.parameters_schema())


# --- (a) the schema's instances are the client's ------------------------------------

# A pattern with lengths is satisfied by filtering.
_generated = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.parametrize("name", NAMES)
def test_whatever_the_schema_accepts_the_client_accepts(name: str) -> None:
    spec = TOOLS[name]

    @_generated
    @given(from_schema(spec.parameters_schema()))
    def check(instance: dict[str, Any]) -> None:
        instance = _as_json(instance)
        assert _schema_accepts(spec, instance), f"the strategy made {instance!r}, which the schema refuses"
        try:
            spec.params.model_validate(instance)
        except ValidationError as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(
                f"{name}: the schema accepts {instance!r} but the client refuses: {exc}"
            ) from None

    check()


# --- (b) what the schema refuses, the client refuses --------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-3, 70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1.0, 5.0, 5.5, 16.0, 64.0, 1e300, 2.0**53, 3600.0, 3600.5])
    | st.text(max_size=80)
    | st.sampled_from(
        ["", "./", "a.py", "0" * 64, "0" * 64 + "\n", "a" * 16, "a" * 16 + "\n", "text", "base64"]
    )
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)


def _field_names(spec: ToolSpec) -> list[str]:
    return list(spec.params.model_fields)


def _agree(spec: ToolSpec, value: object) -> None:
    value = _as_json(value)
    schema, client = _schema_accepts(spec, value), _client_accepts(spec, value)
    assert schema == client, (
        f"{spec.name}: the schema {'accepts' if schema else 'refuses'} {value!r} "
        f"but the client {'accepts' if client else 'refuses'} it"
    )


@pytest.mark.parametrize("name", NAMES)
def test_any_json_object_gets_the_same_verdict_from_both(name: str) -> None:
    spec = TOOLS[name]
    keys = st.sampled_from([*_field_names(spec), "bogus", "status", ""])

    @settings(suppress_health_check=[HealthCheck.too_slow])
    @given(st.dictionaries(keys, json_values, max_size=6))
    def check(value: dict[str, Any]) -> None:
        _agree(spec, value)

    check()


@pytest.mark.parametrize("name", NAMES)
def test_valid_params_with_one_field_changed_to_any_json_value_get_the_same_verdict(name: str) -> None:
    spec = TOOLS[name]

    @_generated
    @given(
        from_schema(spec.parameters_schema()), st.sampled_from([*_field_names(spec), "bogus"]), json_values
    )
    def check(instance: dict[str, Any], key: str, replacement: object) -> None:
        _agree(spec, {**instance, key: replacement})

    check()


def _near_misses(value: object) -> list[object]:
    """Values close to a valid ``value``: where the schema and a validator most often part ways."""
    if isinstance(value, bool):
        return [int(value), str(value).lower(), None, not value]
    if isinstance(value, int | float):
        return [value + 1, value - 1, value + 0.5, float(value), -value, str(value), value > 0, None, 10**400]
    if isinstance(value, str):
        return [
            value + "\n",
            "\n" + value,
            value + "x",
            value[:-1],
            value.upper(),
            "",
            value * 2,
            [value],
            None,
        ]
    if isinstance(value, list):
        return [[], value + value, [1], value[:1], [*value, None], {"0": value}, None]
    return [0, "", False, [], {}]


@pytest.mark.parametrize("name", NAMES)
def test_valid_params_with_one_field_nudged_get_the_same_verdict(name: str) -> None:
    spec = TOOLS[name]

    @_generated
    @given(from_schema(spec.parameters_schema()), st.sampled_from(_field_names(spec)), st.data())
    def check(instance: dict[str, Any], key: str, data: st.DataObject) -> None:
        if key in instance:
            nudged = data.draw(st.sampled_from(_near_misses(instance[key])))
            _agree(spec, {**instance, key: nudged})

    check()


@pytest.mark.parametrize("name", NAMES)
def test_valid_params_without_one_field_get_the_same_verdict(name: str) -> None:
    spec = TOOLS[name]

    @_generated
    @given(from_schema(spec.parameters_schema()), st.sampled_from(_field_names(spec)))
    def check(instance: dict[str, Any], key: str) -> None:
        instance.pop(key, None)
        _agree(spec, instance)

    check()


SHA = "0" * 64
TRAPS: list[tuple[str, dict[str, Any], bool]] = [
    # JSON Schema's "integer" is any number without a fractional part: both take 5.0.
    ("list_files", {"max_entries": 5.0}, True),
    ("list_files", {"max_entries": 5.5}, False),
    ("list_files", {"max_entries": True}, False),
    ("list_files", {"max_entries": "5"}, False),
    ("list_files", {"max_entries": 0}, False),
    ("list_files", {"max_entries": 0.0}, False),
    ("list_files", {"max_entries": 1e300}, False),
    ("undo", {"checkpoint": 3.0}, True),
    ("undo", {"checkpoint": None}, True),
    ("undo", {"checkpoint": 0}, False),
    ("read_files", {"files": ["a"], "offset": 2.0, "limit": 10.0}, True),
    ("read_files", {"files": ["a"], "offset": 0}, False),
    ("read_files", {"files": ["a"], "limit": -1}, False),
    ("read_files", {"files": ["a"], "offset": None, "limit": None}, True),
    ("read_output", {"output_id": "a" * 16, "offset": 0.0}, True),
    # A "number" takes integers, never booleans or strings.
    ("execute_command", {"command": "ls", "timeout": 5}, True),
    ("execute_command", {"command": "ls", "timeout": True}, False),
    ("execute_command", {"command": "ls", "timeout": "5"}, False),
    ("execute_command", {"command": "ls", "timeout": 0}, False),
    ("execute_command", {"command": "ls", "timeout": 10**400}, False),
    # Python's re lets "$" match before a final newline; the lengths close that gap.
    ("write_file", {"path": "a", "content": "", "expected_sha256": SHA}, True),
    ("write_file", {"path": "a", "content": "", "expected_sha256": SHA + "\n"}, False),
    ("edit_file", {"path": "a", "old_string": "x", "new_string": "y", "expected_sha256": SHA + "\n"}, False),
    ("edit_file", {"path": "a", "old_string": "x", "new_string": "y", "expected_sha256": "A" * 64}, False),
    ("read_output", {"output_id": "a" * 16 + "\n"}, False),
    # Shapes.
    ("edit_file", {"path": "a", "old_string": "", "new_string": "y"}, False),
    ("edit_file", {"path": "a", "old_string": "x"}, False),
    (
        "edit_file",
        {"path": "a", "old_string": "x", "new_string": "x"},
        True,
    ),  # refused by the tool, not the schema
    ("search_files", {"pattern": "x", "bogus": 1}, False),
    ("search_files", {"pattern": "x", "glob": ""}, False),
    ("search_files", {"pattern": "(a+)+$"}, True),  # any text: the engine judges the syntax
    ("search_files", {"pattern": "x", "max_results": 2001}, False),
    ("search_files", {"pattern": "x", "respect_gitignore": None}, False),
]


@pytest.mark.parametrize(("name", "params", "valid"), TRAPS)
def test_known_traps_get_the_same_verdict_from_both(name: str, params: dict[str, Any], valid: bool) -> None:
    spec = TOOLS[name]
    assert _schema_accepts(spec, params) is valid
    assert _client_accepts(spec, params) is valid


def test_an_integral_float_reaches_the_tool_as_an_int() -> None:
    params = TOOLS["read_files"].params.model_validate({"files": ["a"], "offset": 3.0})
    dumped = params.model_dump(exclude_unset=True)
    assert dumped["offset"] == 3 and isinstance(dumped["offset"], int)
    assert not math.isnan(float(dumped["offset"]))


def test_lone_surrogates_the_schema_would_take_never_reach_validation() -> None:
    # The one difference left: JSON Schema's validator takes a string holding a lone
    # surrogate ("\ud800"), pydantic refuses it. It never matters: such text is not valid
    # Unicode, and both ends refuse the frame that carries it before any validation.
    assert _schema_accepts(TOOLS["read_files"], {"files": ["\ud800"]})
    assert isinstance(load_json('{"files": ["\\ud800"]}'), Malformed)
