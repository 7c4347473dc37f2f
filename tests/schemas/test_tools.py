"""The tool models and the catalogue generated from them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.tools import (
    TOOLS,
    ExecuteCommandParams,
    ListFilesParams,
    ReadFilesParams,
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
        (ReadFilesParams, {"files": ["a"] * 101}),
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
