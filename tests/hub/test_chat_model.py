"""OpenAIModel against a broken or hostile endpoint (the scripted server, over real HTTP, in-process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hub.chat import EventQueue
from hub.llm.model import ModelError, ModelTurn, TextDelta
from hub.llm.openai_model import OpenAIModel
from tests.scripted_llm import Fail, Raw, ScriptedLLM

pytestmark = pytest.mark.anyio

KEY = "sk-scripted-secret-0123456789"
DONE = "data: [DONE]\n\n"


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM().start()
    yield server
    server.stop()


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


def call_delta(index: Any, **fields: Any) -> dict[str, Any]:
    return delta(tool_calls=[{"index": index, **fields}])


async def answer(
    llm: ScriptedLLM, step: Raw | Fail, base_url: str | None = None, **options: Any
) -> tuple[list[str], ModelTurn]:
    llm.add(step)
    model = OpenAIModel(base_url or llm.base_url, "m", KEY, timeout=10, max_retries=0)
    for k, v in options.items():
        setattr(model, k, v)
    deltas: list[str] = []
    try:
        async for event in model.stream([{"role": "user", "content": "hi"}], []):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
            else:
                return deltas, event
    finally:
        await model.aclose()
    raise AssertionError("no ModelTurn")


async def test_odd_but_readable_chunks_become_text_that_can_be_stored_and_sent(llm: ScriptedLLM) -> None:
    """Content as a list of parts, arguments as an object, lone surrogates, an index that is not a number:
    each used to fail the turn as the hub's own bug, or to crash a caller's event stream."""
    # A smiley's UTF-16 pair split over two chunks, then a lone half.
    high, low = '"\\ud83d"', '"\\ude00"'
    raw = Raw(
        [
            delta(content=[{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]),
            f'data: {{"choices":[{{"index":0,"delta":{{"content":{high[:-1]} lone"}}}}]}}\n\n',
            call_delta(0, id="a", function={"name": "list_files", "arguments": {"path": "."}}),
            call_delta(1, id="b", function={"name": "read_files", "arguments": '{"files": ["'}),
            f'data: {{"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":1,"function":{{"arguments":{high}}}}}]}}}}]}}\n\n',
            f'data: {{"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":1,"function":{{"arguments":{low}}}}}]}}}}]}}\n\n',
            call_delta(1, function={"arguments": '"]}'}),
            call_delta("two", id="c", function={"name": "x\ud800", "arguments": "{}"}),
            DONE,
        ]
    )

    deltas, turn = await answer(llm, raw)

    assert deltas == ["Hello there", "\ufffd lone"]
    assert turn.content == "Hello there\ufffd lone"
    first, second, third = turn.tool_calls
    assert json.loads(first.arguments) == {"path": "."}
    assert json.loads(second.arguments) == {"files": ["\U0001f600"]}  # the pair, joined again
    assert third.id == "c" and third.name == "x\ufffd"
    for text in [*deltas, turn.content, *(c.arguments + c.name + c.id for c in turn.tool_calls)]:
        text.encode("utf-8")


@pytest.mark.parametrize(
    "reported",
    [
        {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None},
        {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    ],
)
async def test_usage_of_only_zeros_or_nulls_is_no_usage_so_the_loop_estimates_it(
    llm: ScriptedLLM, reported: dict[str, Any]
) -> None:
    """Such a report used to count as zero tokens: the turn's token budget never ran out."""
    _, turn = await answer(llm, Raw([delta(content="hi"), {"choices": [], "usage": reported}, DONE]))
    assert turn.usage is None


async def test_an_endpoint_that_streams_for_ever_is_stopped(llm: ScriptedLLM) -> None:
    """A model repeating itself streams within the SDK's per-read timeout; nothing ended the turn."""
    with pytest.raises(ModelError, match="over 300000 characters"):
        await answer(llm, Raw([delta(content="again " * 2000)], forever=True), max_answer_chars=300_000)


async def test_an_upstream_message_never_carries_the_api_key_or_the_urls_password(llm: ScriptedLLM) -> None:
    body = json.dumps({"error": {"message": f"Invalid API key: {KEY}. Check it."}})
    with pytest.raises(ModelError) as failed:
        await answer(llm, Fail(401, body))
    assert (
        failed.value.message
        == "the model's endpoint answered HTTP 401: Invalid API key: [the API key]. Check it."
    )

    with pytest.raises(ModelError) as failed:
        await answer(llm, Fail(garbage="nope"), base_url=f"http://user:hunter2@127.0.0.1:{llm.port}/v1")
    assert "hunter2" not in failed.value.message and f"http://127.0.0.1:{llm.port}/v1" in failed.value.message


@pytest.mark.parametrize(
    "chunk",
    [
        "data: [1, 2]\n\n",  # a chunk that is not an object
        "data: null\n\n",
        {"choices": "abc"},
        {"choices": [7]},
        {"choices": [{"index": 0, "delta": "text"}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": {"index": 0}}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]},
        {"choices": [], "usage": ["not", "an", "object"]},
        {"choices": [], "usage": {"prompt_tokens": "many"}},
    ],
)
async def test_a_chunk_of_the_wrong_shape_is_the_endpoints_error_not_the_hubs(
    llm: ScriptedLLM, chunk: dict[str, Any] | str
) -> None:
    """Chunks are read as the JSON they came as (no SDK model): every shape the hub cannot read is a
    ModelError naming the endpoint, never an exception of the hub's own."""
    with pytest.raises(ModelError, match="not a chat completion"):
        await answer(llm, Raw([delta(content="hi"), chunk, DONE]))


async def test_a_turns_events_end_where_it_closed_them() -> None:
    """The stream's end is queued after the turn's last event (an event put later is never read)."""
    events = EventQueue()
    events.put("text", {"text": "a"})
    events.put("text", {"text": "b"})
    events.close()
    events.put("text", {"text": "late"})
    assert await events.get() == ("text", {"text": "a"})
    assert events.get_nowait() == ("text", {"text": "b"})
    assert await events.get() is None


@pytest.mark.parametrize(
    "chunk",
    [
        'data: {"choices": [], "usage": {"prompt_tokens": 1e400}}\n\n',
        'data: {"choices":[{"index":0,"delta":{"content":' + "[" * 400 + "]" * 400 + "}}]}\n\n",
    ],
    ids=["usage-inf", "nested-content"],
)
async def test_a_number_out_of_range_or_nesting_too_deep_is_the_endpoints_error(
    llm: ScriptedLLM, chunk: str
) -> None:
    """Found by review (older than the chunk reader): OverflowError and RecursionError were the hub's own
    failure, with a traceback in its log."""
    with pytest.raises(ModelError, match="not a chat completion"):
        await answer(llm, Raw([delta(content="hi"), chunk, DONE]))


async def test_tool_call_names_count_toward_the_answers_size(llm: ScriptedLLM) -> None:
    with pytest.raises(ModelError, match="over 1000 characters"):
        await answer(
            llm,
            Raw([call_delta(0, id="a", function={"name": "n" * 600})] * 3 + [DONE]),
            max_answer_chars=1000,
        )
