"""The tool models and the catalogue generated from them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.envelope import Envelope, envelope_to_jsonrpc, jsonrpc_to_envelope, response_type
from schemas.errors import ErrorCode
from schemas.jsonrpc import ErrorObject, ErrorResponse, Request, Response
from schemas.tools import (
    MAX_FILES_PER_READ,
    TOOLS,
    EditFileParams,
    ExecuteCommandParams,
    ListFilesParams,
    ReadFilesParams,
    SearchFilesParams,
    WriteFileParams,
    tools_for_llm,
)


def test_every_tool_schema_is_generated_from_its_model_and_refuses_unknown_fields() -> None:
    for spec in TOOLS.values():
        schema = spec.parameters_schema()
        assert schema == spec.params.model_json_schema()
        assert schema["type"] == "object" and schema["additionalProperties"] is False


def test_the_catalogue_is_in_the_chat_completions_function_calling_shape() -> None:
    for tool in tools_for_llm():
        assert set(tool) == {"type", "function"} and tool["type"] == "function"
        assert set(tool["function"]) == {"name", "description", "parameters"}
        assert tool["function"]["parameters"] == TOOLS[tool["function"]["name"]].params.model_json_schema()
        assert len(tool["function"]["description"]) > 40


@pytest.mark.parametrize(
    ("model", "params"),
    [
        (ExecuteCommandParams, {"command": "ls", "timeout": "5"}),  # a string is not a number
        (ExecuteCommandParams, {"command": "ls", "timeout": 0}),
        (ExecuteCommandParams, {"command": "ls", "timeout": 1e9}),
        (ExecuteCommandParams, {"command": ""}),
        (ExecuteCommandParams, {}),
        (ReadFilesParams, {"files": "a.py"}),
        (ReadFilesParams, {"files": []}),
        (ReadFilesParams, {"files": [1]}),
        (ReadFilesParams, {"files": ["a"] * (MAX_FILES_PER_READ + 1)}),
        (ListFilesParams, {"recursive": "yes"}),
        (ListFilesParams, {"path": "a", "bogus": 1}),
        (WriteFileParams, {"path": "a"}),
        (WriteFileParams, {"path": "a", "content": 5}),
    ],
)
def test_params_of_the_wrong_type_or_shape_are_refused(model: type, params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(params)


def test_defaults_follow_the_contract() -> None:
    assert ListFilesParams().path == "./" and ListFilesParams().recursive is False
    assert ExecuteCommandParams(command="ls").timeout == 60


def test_every_param_of_every_tool_is_described_for_the_model() -> None:
    for spec in TOOLS.values():
        for name, field in spec.parameters_schema()["properties"].items():
            assert len(field.get("description", "")) > 10, f"{spec.name}.{name} has no description"


def test_the_descriptions_steer_the_model_to_the_right_tool() -> None:
    assert "edit_file" in TOOLS["write_file"].description  # prefer edit_file for changes
    assert "write_file" in TOOLS["edit_file"].description
    assert "search_files" in TOOLS["list_files"].description
    assert "search_files" in TOOLS["execute_command"].description
    assert "offset" in TOOLS["read_files"].description and "limit" in TOOLS["read_files"].description
    assert "RE2" in TOOLS["search_files"].description


def test_every_tool_names_what_its_errors_mean() -> None:
    for spec in TOOLS.values():
        assert spec.errors, spec.name
        assert all(len(meaning) > 10 for meaning in spec.errors.values())


def test_the_new_tools_refuse_bad_params() -> None:
    bad: list[tuple[type, dict[str, object]]] = [
        (EditFileParams, {"path": "a", "old_string": "", "new_string": "b"}),
        (EditFileParams, {"path": "a", "old_string": "a"}),
        (EditFileParams, {"path": "a", "old_string": "a", "new_string": "b", "replace_all": "yes"}),
        (SearchFilesParams, {}),
        (SearchFilesParams, {"pattern": ""}),
        (SearchFilesParams, {"pattern": "a", "max_results": 0}),
        (SearchFilesParams, {"pattern": "a", "max_results": 10_000}),
        (SearchFilesParams, {"pattern": "a", "case_sensitive": 1}),
        (ReadFilesParams, {"files": ["a"], "offset": 0}),
        (ReadFilesParams, {"files": ["a"], "limit": 0}),
        (ReadFilesParams, {"files": ["a"], "offset": "3"}),
    ]
    for model, params in bad:
        with pytest.raises(ValidationError):
            model.model_validate(params)
    assert SearchFilesParams(pattern="x").max_results == 200
    assert SearchFilesParams(pattern="x").respect_gitignore is True
    assert EditFileParams(path="a", old_string="x", new_string="").replace_all is False


@pytest.mark.parametrize("name", list(TOOLS))
def test_every_tool_travels_in_the_typed_envelope_framing_too(name: str) -> None:
    # The adapter maps any method m onto m_response: a new tool needs nothing of its own.
    request = Envelope(type=name, request_id="9", payload={"path": "a"})
    assert envelope_to_jsonrpc(request) == Request(id="9", method=name, params={"path": "a"})
    answer_type = response_type(name)
    assert answer_type == ("command_output" if name == "execute_command" else f"{name}_response")
    success = jsonrpc_to_envelope(
        Response(id="9", result={"matches": ["a:1: x"], "truncated": False}), method=name
    )
    assert success.type == answer_type
    assert success.payload == {"status": "success", "matches": ["a:1: x"], "truncated": False}
    assert envelope_to_jsonrpc(success) == Response(
        id="9", result={"matches": ["a:1: x"], "truncated": False}
    )
    error = ErrorResponse(
        id="9", error=ErrorObject(code=ErrorCode.MULTIPLE_MATCHES, message="2 times", data={"matches": 2})
    )
    payload = jsonrpc_to_envelope(error, method=name).payload
    assert payload == {"status": "error", "error_message": "2 times", "error_code": -32016, "matches": 2}


def test_no_result_field_collides_with_the_envelopes_reserved_keys() -> None:
    for spec in TOOLS.values():
        assert not {"status", "error_message", "error_code"} & set(spec.result.model_fields), spec.name
