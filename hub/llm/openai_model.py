"""A :class:`ChatModel` over any OpenAI-compatible endpoint, with the official SDK.

``AsyncOpenAI(base_url=...)`` speaks to OpenAI, Ollama, vLLM, llama.cpp's
server, LM Studio, OpenRouter and the rest. The SDK retries connection errors,
429 and 5xx a bounded number of times (``max_retries``) under a per-request
``timeout``; whatever still fails becomes a :class:`ModelError` carrying the
upstream's own message.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from openai.types.chat import ChatCompletion

from hub.llm.model import Message, ModelError, ModelTurn, TextDelta, ToolCall, Usage
from schemas.framing import dump_json, dump_json_bytes

log = logging.getLogger("aihub.llm")

#: The longest upstream error text passed on to the user.
MAX_UPSTREAM_MESSAGE = 2000
#: The most characters (words and tool-call arguments) one answer may stream: a model caught in a
#: loop of repetitions would otherwise stream for ever, well within the SDK's per-read timeout.
MAX_ANSWER_CHARS = 2_000_000


def _shorten(text: str, limit: int = MAX_UPSTREAM_MESSAGE) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def _text(value: Any) -> str:
    """A piece of a streamed answer as valid text, whatever the endpoint put there.

    The SDK does not validate stream chunks: content may come as a list of parts,
    arguments as a JSON object, and any string may hold a lone surrogate (half of a
    UTF-16 pair), which could not be stored, sent to a caller or sent back.
    """
    if value is None:
        return ""
    if isinstance(value, list):  # content parts: [{"type": "text", "text": ...}]
        text = "".join(_text(p.get("text") if isinstance(p, dict) else p) for p in value)
    else:
        text = value if isinstance(value, str) else dump_json(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # pairs joined, lone halves replaced by U+FFFD
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _usage(reported: Any) -> Usage | None:
    """The usage an endpoint reported; None (the loop then estimates) when it reports only zeros or nulls."""
    fields = _object(reported, "usage")
    usage = Usage(int(fields.get("prompt_tokens") or 0), int(fields.get("completion_tokens") or 0))
    return usage if usage.total_tokens > 0 else None


def _object(value: Any, what: str) -> dict[str, Any]:
    """A part of a stream chunk that must be a JSON object (null: an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not an object: {value!r:.100}")
    return value


def _array(value: Any, what: str) -> list[Any]:
    """A part of a stream chunk that must be a JSON array (null: an empty one)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{what} is not an array: {value!r:.100}")
    return value


def shown_url(url: str) -> str:
    """``url`` without the user and password it may carry (``https://user:pass@host/v1``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def upstream_error(exc: Exception, base_url: str, secret: str | None = None) -> ModelError:
    """A :class:`ModelError` for what the SDK raised, with the upstream's message (``secret`` hidden)."""
    error = _upstream_error(exc, shown_url(base_url))
    if secret and len(secret) >= 8 and secret in error.message:  # an endpoint that echoes the API key
        error = ModelError(error.message.replace(secret, "[the API key]"), error.status)
    return error


def _upstream_error(exc: Exception, base_url: str) -> ModelError:
    if isinstance(exc, openai.APITimeoutError):
        return ModelError(f"the model's endpoint {base_url} did not answer in time (after retries)")
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(f"cannot reach the model's endpoint {base_url}: {exc.__cause__ or exc}")
    if isinstance(exc, openai.APIStatusError):
        message = re.sub(r"^Error code: \d+ - ", "", str(exc.message))
        return ModelError(
            f"the model's endpoint answered HTTP {exc.status_code}: {_shorten(message)}",
            status=exc.status_code,
        )
    if isinstance(exc, openai.APIError):
        return ModelError(f"the model's endpoint failed: {_shorten(str(exc.message))}")
    # The SDK parsed something that is not a chat completion (garbage, a proxy's HTML page...).
    return ModelError(f"the model's endpoint answered something that is not a chat completion: {exc!r:.300}")


@dataclass
class _ToolCallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class OpenAIModel:
    """Streams Chat Completions; tool calls are put together from their deltas."""

    base_url: str
    model: str
    api_key: str
    timeout: float = 120.0
    max_retries: int = 2
    client: openai.AsyncOpenAI = field(init=False)
    #: Cleared when the endpoint refuses ``stream_options`` (some older servers do).
    usage_in_stream: bool = True
    max_answer_chars: int = MAX_ANSWER_CHARS

    def __post_init__(self) -> None:
        self.client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    @property
    def name(self) -> str:
        return self.model

    async def aclose(self) -> None:
        await self.client.close()

    async def _open(self, messages: list[Message], tools: list[dict[str, Any]]) -> Any:
        request: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if tools:
            request["tools"] = tools
        if self.usage_in_stream:
            try:
                return await self._post(request | {"stream_options": {"include_usage": True}})
            except openai.BadRequestError as exc:
                if "stream_options" not in str(exc.message):
                    raise
                log.info("the endpoint refuses stream_options; usage will be estimated")
                self.usage_in_stream = False
        return await self._post(request)

    async def _post(self, body: dict[str, Any]) -> openai.AsyncStream[object]:
        """``chat.completions.create(stream=True, **body)`` without its request transform,
        each chunk as the JSON it came as.

        ``create`` walks every message of the body against the SDK's TypedDicts
        (``async_maybe_transform``) to rename and reformat fields; our messages are plain
        JSON already, so that walk changes nothing, yet it was 79 % of the hub's CPU in a
        chat turn and grew with the history (85 ms a turn at 400 messages). ``client.post``
        is the SDK's documented way to a route as it is: same retries, timeout, errors
        and stream parsing. Chunks typed ``object`` are handed over as parsed: building a
        ``ChatCompletionChunk`` of each (the SDK's ``construct_type``, unvalidated anyway)
        was a quarter of the hub's CPU while an answer streams (``benchmarks.chat_turns
        --chunks 200 --stream``); :meth:`stream` reads the few fields it needs and checks
        their shapes.
        """
        return await self.client.post(
            "/chat/completions",
            # Encoded here, by orjson: the SDK's json.dumps of the whole history was 8 % of the
            # hub's CPU in a streamed turn. Bytes go out as they are (same JSON; a lone
            # surrogate still fails as the SDK's encoder fails).
            content=dump_json_bytes(body),
            cast_to=ChatCompletion,
            options={"security": {"bearer_auth": True}},
            stream=True,
            stream_cls=openai.AsyncStream[object],
        )

    async def stream(
        self, messages: list[Message], tools: list[dict[str, Any]]
    ) -> AsyncIterator[TextDelta | ModelTurn]:
        text: list[str] = []
        calls: dict[int, _ToolCallParts] = {}
        usage: Usage | None = None
        finish: str | None = None
        chunks_seen = 0
        size = 0
        try:
            chunks = await self._open(messages, tools)
            async with chunks:
                async for received in chunks:
                    chunks_seen += 1
                    if not isinstance(received, dict):
                        raise TypeError(f"a chunk is not an object: {received!r:.100}")
                    chunk: dict[str, Any] = received
                    if chunk.get("usage") is not None:
                        usage = _usage(chunk["usage"])
                    for choice in _array(chunk.get("choices"), "choices"):
                        choice = _object(choice, "a choice")
                        if reason := choice.get("finish_reason"):
                            finish = _text(reason)
                        if choice.get("delta") is None:
                            continue
                        delta = _object(choice["delta"], "a delta")
                        if content := _text(delta.get("content")):
                            size += len(content)
                            text.append(content)
                            yield TextDelta(content)
                        for part in _array(delta.get("tool_calls"), "tool_calls"):
                            part = _object(part, "a tool call")
                            index = part.get("index")
                            parts = calls.setdefault(
                                index if isinstance(index, int) else len(calls), _ToolCallParts()
                            )
                            if call_id := part.get("id"):
                                parts.id = _text(call_id)
                            if part.get("function") is not None:
                                function = _object(part["function"], "a function")
                                if name := function.get("name"):
                                    named = _text(name)
                                    parts.name += named
                                    size += len(named)
                                if piece := function.get("arguments"):
                                    # Joined before made valid: a UTF-16 pair may come in two pieces.
                                    parts.arguments.append(piece if isinstance(piece, str) else _text(piece))
                                    size += len(parts.arguments[-1])
                    if size > self.max_answer_chars:
                        raise ModelError(
                            f"the model's answer went over {self.max_answer_chars} characters without "
                            "ending (a model repeating itself?); it was stopped"
                        )
        except ModelError:
            raise
        except (
            openai.APIError,
            json.JSONDecodeError,
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
            OverflowError,  # a count of 1e400 tokens
            RecursionError,  # JSON nested hundreds deep
        ) as exc:
            raise upstream_error(exc, self.base_url, self.api_key) from None
        if chunks_seen == 0:
            raise ModelError(
                f"the model's endpoint {shown_url(self.base_url)} answered something that is not a chat completion "
                "(an empty stream, or not server-sent events)"
            )
        tool_calls = [
            ToolCall(
                id=parts.id or f"call_{secrets.token_hex(8)}",
                name=parts.name,
                arguments=_text("".join(parts.arguments)),
            )
            for _, parts in sorted(calls.items())
        ]
        yield ModelTurn(content="".join(text), tool_calls=tool_calls, usage=usage, finish_reason=finish)
