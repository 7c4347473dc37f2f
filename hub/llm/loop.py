"""The tool-calling loop: one user message in, model turns and tool calls until the model is done.

It depends on three small protocols and nothing from FastAPI: a
:class:`~hub.llm.model.ChatModel`, a :class:`ToolRunner` (the workspace's tools)
and a :class:`Recorder` (where the conversation is kept). Each model turn's tool
calls run concurrently, a bounded number at once; every call is answered with its
``tool_call_id``, in the order the model made them, even when the turn is
cancelled (and a history the hub did not get to answer is completed before it is
sent again); arguments that are not JSON or do not validate are answered with an
error the model can act on.
Runaway turns end at a step limit or a token budget with a clear final message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from hub.llm.model import ChatModel, Message, ModelError, ModelTurn, TextDelta, ToolCall, Usage
from schemas.framing import dump_json, load_json
from schemas.jsonrpc import Malformed
from schemas.tools import TOOLS, Params, validation_errors

log = logging.getLogger("aihub.llm")

#: Receives each event of a turn as it happens: (name, data).
Emit = Callable[[str, dict[str, Any]], None]
#: Receives a running command's output: (stream, text).
OnOutput = Callable[[str, str], None]


class ToolRunner(Protocol):
    def tools(self) -> list[dict[str, Any]]:
        """The tools the model may call, in the function-calling format."""
        ...

    async def run(self, tool: str, params: Params, on_output: OnOutput) -> dict[str, Any]:
        """Run a validated call; answer the typed-envelope payload (``status`` success or error).

        Never raises for a tool's own failure: a refused path, a timeout or a
        client that went away are error payloads the model reads.
        """
        ...


class Recorder(Protocol):
    def message(self, message: Message) -> None:
        """Keep one message of the conversation, in order."""
        ...

    def step(self, step: Step) -> None:
        """Keep one finished tool call."""
        ...


@dataclass(frozen=True)
class LoopLimits:
    #: Model calls in one turn.
    max_steps: int = 30
    #: Prompt plus completion tokens over one turn (estimated when the endpoint reports none).
    max_tokens: int = 400_000
    #: Characters of one tool result shown to the model; the rest is cut with a marker.
    max_result_chars: int = 24_000
    #: Tool calls of one model turn running at once, the others waiting for a slot (a client
    #: serves 64 requests at once, for every caller, and answers "busy" beyond).
    max_parallel_calls: int = 16


@dataclass
class Step:
    """One tool call of a turn, as the caller and the history see it."""

    tool_call_id: str
    tool: str
    arguments: Any
    model_step: int
    status: str = "running"
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    duration_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "tool_call_id": self.tool_call_id,
            "tool": self.tool,
            "arguments": self.arguments,
            "status": self.status,
            "model_step": self.model_step,
            "started_at": self.started_at,
            "duration_ms": round(self.duration_ms, 1),
        }
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass
class TurnResult:
    reply: str
    steps: list[Step]
    usage: Usage
    #: done, step_limit or token_budget.
    stop_reason: str


def system_prompt(workspace: str, tools: list[dict[str, Any]]) -> str:
    names = ", ".join(t["function"]["name"] for t in tools)
    return (
        f"You are a software engineer working directly on the user's project {workspace!r} through tools "
        f"that run on the user's machine, inside the project folder only. Your tools: {names}.\n"
        "- Paths are relative to the project root. Paths outside it, secret files (.env, keys) and .git/ "
        "are refused: do not try to get around that.\n"
        "- Look before you change: list_files and search_files to find code, read_files to read it "
        "(large files in pages with offset and limit).\n"
        "- Change files with edit_file (an exact old_string and its replacement) when it is available; "
        "write_file replaces a whole file.\n"
        "- Run tests and programs with execute_command. A non-zero exit_code is a normal answer to read. "
        "Commands that delete files or need privileges ask the user first and may be refused: then find "
        "another way or ask the user.\n"
        "- Call several tools in one turn when they do not depend on each other.\n"
        "- A tool result that is too long is cut, and says how to read the rest.\n"
        "When the task is done, answer briefly: what you found, what you changed, and how you checked it."
    )


# --- tool results that fit ------------------------------------------------

HINTS = {
    "read_files": "read the file in pages with read_files offset and limit",
    "execute_command": "the full output is kept when the answer has an output_id: page through it with "
    "read_output; otherwise narrow the command's output (grep, head, tail)",
    "read_output": "read a smaller page (a lower limit)",
    "list_files": "list a subfolder, or without recursive",
    "search_files": "narrow the pattern, the path or the glob",
}


def _cut_marker(cut: int, budget: int, tool: str) -> str:
    hint = HINTS.get(tool, "ask for less")
    return f"[... {cut} characters cut: this result is over the {budget}-character budget; to see the rest, {hint} ...]"


def _more_cut(cut: int, tool: str) -> str:
    return f"[... {cut} more entries cut; to see them, {HINTS.get(tool, 'ask for less')} ...]"


def _shrunk(value: Any, chars: int, items: int, budget: int, tool: str, top: bool = True) -> Any:
    """``value`` with every string over ``chars`` cut in its middle and every list or object
    (but the payload itself) over ``items`` entries cut."""
    if isinstance(value, str):
        if len(value) <= chars:
            return value
        half = chars // 2
        return value[:half] + "\n" + _cut_marker(len(value) - 2 * half, budget, tool) + "\n" + value[-half:]
    if isinstance(value, list):
        kept = [_shrunk(v, chars, items, budget, tool, False) for v in value[:items]]
        if len(value) > items:
            kept.append(_more_cut(len(value) - items, tool))
        return kept
    if isinstance(value, dict):
        entries = list(value.items()) if top else list(value.items())[:items]
        shrunk = {k: _shrunk(v, chars, items, budget, tool, False) for k, v in entries}
        if len(value) > len(entries):  # e.g. read_files' {path: content} of many files
            shrunk["[cut]"] = _more_cut(len(value) - len(entries), tool)
        return shrunk
    return value


def _longest(value: Any, top: bool = True) -> int:
    """The most entries of a list or object in ``value`` (the payload itself aside)."""
    if isinstance(value, list):
        return max([len(value), *(_longest(v, False) for v in value)])
    if isinstance(value, dict):
        return max([0 if top else len(value), *(_longest(v, False) for v in value.values())])
    return 0


def fit_result(payload: dict[str, Any], budget: int, tool: str) -> str:
    """The payload as JSON of at most about ``budget`` characters, still valid JSON when cut.

    Long strings (file contents, output) are cut in the middle and long lists at
    their end, halving until it fits, each cut saying how to read the rest.
    """
    text = dump_json(payload)
    if len(text) <= budget:
        return text
    longest = _longest(payload)
    for halvings in range(1, 30):
        chars, items = max(100, budget >> halvings), max(1, longest >> halvings)
        text = dump_json(_shrunk(payload, chars, items, budget, tool))
        if len(text) <= budget:
            return text
        if chars == 100 and items == 1:
            break

    # Still over (a payload of many keys): its text's start, as a string of valid JSON.
    head = budget // 3
    return dump_json(
        {
            "status": payload.get("status"),
            "cut_result": text[:head],
            "note": _cut_marker(len(text) - head, budget, tool),
        }
    )


# --- the loop -------------------------------------------------------------


def _estimate_tokens(messages: list[Message], turn: ModelTurn) -> Usage:
    """About four characters a token, when the endpoint reports no usage."""
    prompt = sum(len(dump_json(m)) for m in messages) // 4
    completion = (len(turn.content) + sum(len(c.arguments) + len(c.name) for c in turn.tool_calls)) // 4
    return Usage(prompt, completion)


def _error_payload(message: str) -> dict[str, Any]:
    return {"status": "error", "error_message": message}


#: Nesting past which arguments are shown as the model's text rather than parsed: deeper values
#: overflow the stack of whatever serializes them again (a response, the conversation's detail).
MAX_SHOWN_DEPTH = 32


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def parse_call(call: ToolCall) -> tuple[Params | None, Any, str | None]:
    """(validated params, arguments as shown, error for the model)."""
    spec = TOOLS.get(call.name)
    text = call.arguments.strip()
    arguments = load_json(text) if text else {}
    if isinstance(arguments, Malformed):
        return None, call.arguments, f"the arguments are {arguments.message}; send one JSON object"
    if _deeper_than(arguments, MAX_SHOWN_DEPTH):
        return None, call.arguments, f"the arguments are nested over {MAX_SHOWN_DEPTH} levels deep"

    if spec is None:
        return None, arguments, f"there is no tool {call.name!r}; the tools are: {', '.join(sorted(TOOLS))}"
    if not isinstance(arguments, dict):
        return None, arguments, f"the arguments must be a JSON object, not {type(arguments).__name__}"
    try:
        return spec.params.model_validate(arguments), arguments, None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(e['loc']) or '(arguments)'}: {e['msg']}" for e in validation_errors(exc)
        )
        return None, arguments, f"invalid arguments for {call.name}: {problems}"


def answer_every_call(history: list[Message]) -> list[Message]:
    """``history`` with each assistant tool call followed by one answer, in the order of the calls.

    A turn answers every call even when cancelled, but a hub that was killed
    mid-call (or could not write) leaves calls unanswered, and every later request
    of the conversation would be refused for it. Missing answers say so; answers
    to no call of the message before them are dropped.
    """
    repaired: list[Message] = []
    index = 0
    while index < len(history):
        message = history[index]
        index += 1
        if message.get("role") == "tool":
            continue  # an answer to no call
        repaired.append(message)
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        if not calls:
            continue
        answers: list[Message] = []
        while index < len(history) and history[index].get("role") == "tool":
            answers.append(history[index])
            index += 1
        for call in calls:
            call_id = call.get("id") if isinstance(call, dict) else None
            found = next((a for a in answers if a.get("tool_call_id") == call_id), None)
            if found is not None:
                answers.remove(found)
            repaired.append(
                found
                or {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": dump_json(
                        _error_payload("no answer: the hub stopped before this call ended (it may have run)")
                    ),
                }
            )
    return repaired


def _tool_call_ids(messages: list[Message]) -> set[str]:
    return {
        str(call.get("id"))
        for m in messages
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or ()
        if isinstance(call, dict)
    }


@dataclass
class Turn:
    """One user message's worth of work. ``run`` may be cancelled at any await."""

    model: ChatModel
    runner: ToolRunner
    recorder: Recorder
    limits: LoopLimits = field(default_factory=LoopLimits)
    emit: Emit = lambda name, data: None
    steps: list[Step] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)

    async def run(self, history: list[Message], message: str, system: str) -> TurnResult:
        tools = self.runner.tools()
        user = {"role": "user", "content": message}
        self.recorder.message(user)
        messages = [{"role": "system", "content": system}, *answer_every_call(history), user]
        used_ids = _tool_call_ids(messages)
        reply = ""
        for model_step in range(1, self.limits.max_steps + 1):
            turn = self._unique_ids(await self._model_turn(messages, tools), used_ids)
            reply = turn.content
            self.usage += turn.usage or _estimate_tokens(messages, turn)
            assistant: Message = {"role": "assistant", "content": turn.content or None}
            if turn.tool_calls:
                assistant["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in turn.tool_calls
                ]
            messages.append(assistant)
            self.recorder.message(assistant)
            if not turn.tool_calls:
                return TurnResult(reply, self.steps, self.usage, "done")
            messages.extend(await self._run_tools(turn.tool_calls, model_step))
            if self.usage.total_tokens >= self.limits.max_tokens:
                return self._stopped(
                    messages,
                    reply,
                    "token_budget",
                    f"the turn used {self.usage.total_tokens} tokens, over its budget of "
                    f"{self.limits.max_tokens}",
                )
        return self._stopped(
            messages, reply, "step_limit", f"the model made {self.limits.max_steps} calls, the step limit"
        )

    @staticmethod
    def _unique_ids(turn: ModelTurn, used: set[str]) -> ModelTurn:
        """``turn`` with a fresh id for each call whose id is empty or already used in the conversation.

        Some models number their calls ``call_0``, ``call_1``... again at every turn:
        their calls and answers would be mixed up (and one kept of each in the store).
        """
        calls = []
        for call in turn.tool_calls:
            if not call.id or call.id in used:
                call = dataclasses.replace(call, id=f"call_{secrets.token_hex(8)}")
            used.add(call.id)
            calls.append(call)
        return dataclasses.replace(turn, tool_calls=calls)

    def _stopped(self, messages: list[Message], reply: str, reason: str, why: str) -> TurnResult:
        note = (
            f"[Stopped by the hub: {why}, before the model finished. Its tool calls so far are kept; "
            "send another message (e.g. 'continue') to go on.]"
        )
        final = {"role": "assistant", "content": note}
        messages.append(final)
        self.recorder.message(final)
        return TurnResult(f"{reply}\n\n{note}".strip(), self.steps, self.usage, reason)

    async def _model_turn(self, messages: list[Message], tools: list[dict[str, Any]]) -> ModelTurn:
        partial: list[str] = []
        try:
            async for event in self.model.stream(messages, tools):
                if isinstance(event, TextDelta):
                    partial.append(event.text)
                    self.emit("text", {"delta": event.text})
                else:
                    return event
        except BaseException as exc:
            if partial:  # what the user already saw stays in the history
                why = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
                text = "".join(partial)
                if len(text) > self.limits.max_result_chars:  # a runaway answer must not fill the history
                    text = text[: self.limits.max_result_chars] + " [...]"
                self.recorder.message({"role": "assistant", "content": f"{text} [{why}]"})
            raise
        raise ModelError("the model's stream ended without an answer")

    async def _run_tools(self, calls: list[ToolCall], model_step: int) -> list[Message]:
        answers: dict[int, Message] = {}
        slots = asyncio.Semaphore(self.limits.max_parallel_calls)

        async def one(index: int, call: ToolCall) -> None:
            params, arguments, problem = parse_call(call)
            step = Step(call.id, call.name, arguments, model_step)
            self.steps.append(step)
            self.emit("tool_call", {"id": call.id, "tool": call.name, "arguments": arguments})
            started = time.monotonic()
            if params is None:
                payload = _error_payload(problem or "invalid call")
            else:
                try:
                    async with slots:
                        step.started_at, started = time.time(), time.monotonic()
                        payload = await self.runner.run(
                            call.name,
                            params,
                            lambda stream, data: self.emit(
                                "output", {"tool_call_id": call.id, "stream": stream, "data": data}
                            ),
                        )
                except asyncio.CancelledError:
                    step.status, step.error = "cancelled", "the turn was cancelled"
                    raise
                except Exception:  # a bug of ours must not take the other calls with it
                    log.exception("tool call %s failed in the hub", call.name)
                    payload = _error_payload("the hub failed this tool call (see its log)")
            step.duration_ms = (time.monotonic() - started) * 1000
            step.status = "success" if payload.get("status") == "success" else "error"
            if step.status == "error":
                step.error = str(payload.get("error_message", "failed"))
            answers[index] = {
                "role": "tool",
                "tool_call_id": call.id,
                "content": fit_result(payload, self.limits.max_result_chars, call.name),
            }
            self.recorder.step(step)
            self.emit("tool_result", {"id": call.id, "tool": call.name, **step.as_dict()})

        try:
            async with asyncio.TaskGroup() as group:
                for index, call in enumerate(calls):
                    group.create_task(one(index, call))
        finally:
            # Every call is answered, in order, even when the turn is cancelled midway:
            # a history with an unanswered tool call is refused by the next request.
            ordered: list[Message] = []
            for index, call in enumerate(calls):
                answer = answers.get(index) or {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": dump_json(_error_payload("cancelled: the user stopped the turn")),
                }
                ordered.append(answer)
                self.recorder.message(answer)
            for step in self.steps:
                if step.status in ("running", "cancelled"):
                    step.status = "cancelled"
                    self.recorder.step(step)
        return ordered
