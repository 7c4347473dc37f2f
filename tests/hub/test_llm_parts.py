"""The loop's pure parts: fitting results, parsing arguments, model settings, the conversation store."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.conversations import Conversations
from hub.llm.factory import OPENAI_BASE_URL, ModelConfig, ModelConfigError, model_config
from hub.llm.loop import Step, answer_every_call, fit_result, parse_call
from hub.llm.model import ToolCall, Usage
from schemas.tools import TOOLS

json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3000))
payloads = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.recursive(
        json_leaves,
        lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
        max_leaves=60,
    ),
    max_size=6,
)


@given(payloads, st.integers(min_value=300, max_value=20_000))
def test_a_fitted_result_is_json_within_about_its_budget(payload: dict[str, object], budget: int) -> None:
    text = fit_result(payload, budget, "read_files")
    shown = json.loads(text)  # always JSON, cut or not
    if len(json.dumps(payload, ensure_ascii=False, separators=(",", ":"))) <= budget:
        assert shown == payload
    else:
        assert len(text) <= budget + 300  # the last-resort cut adds its marker
        assert "characters cut" in text or "more entries cut" in text


def test_a_read_of_many_files_is_cut_to_fewer_files_still_json() -> None:
    """An object of many entries was never cut: such a result ended as JSON text cut in its middle."""
    files = {f"src/package/module_{i:03}.py": "x = 1\n" * 1000 for i in range(100)}
    payload = {"status": "success", "files": files, "sha256": dict.fromkeys(files, "a" * 64)}
    shown = json.loads(fit_result(payload, 24_000, "read_files"))
    assert shown["status"] == "success" and 1 < len(shown["files"]) < 100
    assert "more entries cut" in shown["files"]["[cut]"] and "more entries cut" in shown["sha256"]["[cut]"]
    many_keys = json.loads(
        fit_result({"status": "success", **{f"k{i}": "v" for i in range(9000)}}, 2000, "x")
    )
    assert many_keys["status"] == "success" and "characters cut" in many_keys["note"]


def test_a_long_file_is_cut_in_its_middle_with_a_hint_for_the_tool() -> None:
    content = "".join(f"line {i}\n" for i in range(10_000))
    text = fit_result({"status": "success", "files": {"big.py": content}}, 4000, "read_files")
    shown = json.loads(text)["files"]["big.py"]
    assert shown.startswith("line 0\n") and shown.endswith("line 9999\n")
    assert "read_files offset and limit" in shown
    listing = fit_result(
        {"status": "success", "files": [{"path": f"f{i}"} for i in range(5000)]}, 2000, "list_files"
    )
    entries = json.loads(listing)["files"]
    assert entries[0] == {"path": "f0"} and "more entries cut" in entries[-1] and "subfolder" in entries[-1]


def test_a_history_is_sent_with_every_call_answered_once_in_order() -> None:
    def calls(*ids: str) -> dict[str, object]:
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": i, "type": "function", "function": {"name": "list_files", "arguments": "{}"}}
                for i in ids
            ],
        }

    def answer(call_id: str, content: str = "{}") -> dict[str, object]:
        return {"role": "tool", "tool_call_id": call_id, "content": content}

    user = {"role": "user", "content": "go"}
    whole = [user, calls("a", "b"), answer("a"), answer("b"), {"role": "assistant", "content": "done"}]
    assert answer_every_call(whole) == whole
    repaired = answer_every_call(
        [user, calls("a", "b", "c"), answer("b", "B"), answer("b", "again"), answer("x"), user, answer("a")]
    )
    assert [(m["role"], m.get("tool_call_id")) for m in repaired] == [
        ("user", None), ("assistant", None), ("tool", "a"), ("tool", "b"), ("tool", "c"), ("user", None),
    ]  # fmt: skip
    assert (
        repaired[3]["content"] == "B" and "no answer" in json.loads(repaired[2]["content"])["error_message"]
    )


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("{", "not valid JSON"),
        ('{"files": [1]}', "files.0"),
        ("[1]", "must be a JSON object"),
        ('{"files": ["a"], "timeout": NaN}', "NaN"),
        ("", "files: Field required"),
        ('{"files": ["a"], "x": 1}', "x: Extra inputs are not permitted"),
    ],
)
def test_bad_arguments_get_an_error_the_model_can_act_on(arguments: str, error: str) -> None:
    params, _shown, problem = parse_call(ToolCall("c1", "read_files", arguments))
    assert params is None and problem is not None and error in problem


def test_good_arguments_are_validated_params_and_an_unknown_tool_lists_the_tools() -> None:
    params, shown, problem = parse_call(ToolCall("c1", "read_files", '{"files": ["a.py"]}'))
    assert problem is None and params == TOOLS["read_files"].params.model_validate({"files": ["a.py"]})
    assert shown == {"files": ["a.py"]}
    _, _, problem = parse_call(ToolCall("c2", "rm_rf", "{}"))
    assert problem is not None and "read_files" in problem


def test_model_settings_come_from_flags_then_aihub_then_openai_variables() -> None:
    assert model_config({}) is None
    assert model_config({"OPENAI_API_KEY": "k", "AIHUB_LLM_MODEL": "m"}) == ModelConfig(
        OPENAI_BASE_URL, "m", "k"
    )
    env = {"AIHUB_LLM_BASE_URL": "http://a/v1", "OPENAI_BASE_URL": "http://b/v1", "AIHUB_LLM_MODEL": "m"}
    assert model_config(env).base_url == "http://a/v1"  # type: ignore[union-attr]
    assert model_config(env, base_url="http://c/v1").base_url == "http://c/v1"  # type: ignore[union-attr]
    assert model_config({"AIHUB_LLM_BASE_URL": "local"}) == ModelConfig("local", None, None)
    with pytest.raises(ModelConfigError, match="AIHUB_LLM_MODEL"):
        model_config({"AIHUB_LLM_BASE_URL": "http://localhost:11434/v1"})
    with pytest.raises(ModelConfigError, match="http://"):
        model_config({"AIHUB_LLM_BASE_URL": "localhost:11434", "AIHUB_LLM_MODEL": "m"})


def test_conversations_survive_a_reopen_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "conversations.sqlite3"
    store = Conversations(path)
    conversation = store.create("proj", "model-x", "  fix   the\ntests " + "x" * 200)
    turn = store.begin_turn(conversation, "ws1")
    messages = [
        {"role": "user", "content": "fix the tests"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "list_files", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"status":"success","files":[]}'},
    ]
    for m in messages:
        turn.message(m)
    step = Step("c1", "list_files", {}, 1, status="success", duration_ms=3.5)
    turn.step(step)
    store.end_turn(turn, "done", Usage(10, 2))
    store.close()

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = Conversations(path)
    assert again.history(conversation) == messages
    (listed,) = again.recent()
    assert listed["title"].startswith("fix the tests xxx") and len(listed["title"]) == 80
    assert listed["turns"] == 1 and listed["workspace"] == "proj" and listed["model"] == "model-x"
    detail = again.detail(conversation)
    assert detail is not None
    assert detail["turns"][0]["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    assert detail["tool_calls"][0]["status"] == "success" and detail["tool_calls"][0]["duration_ms"] == 3.5
    second = again.begin_turn(conversation, "ws2")
    assert second.turn == 2 and second.seq == 3
    assert again.detail("nope") is None
