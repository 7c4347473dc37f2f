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

import openai

from hub.llm.model import Message, ModelError, ModelTurn, TextDelta, ToolCall, Usage

log = logging.getLogger("aihub.llm")

#: The longest upstream error text passed on to the user.
MAX_UPSTREAM_MESSAGE = 2000


def _shorten(text: str, limit: int = MAX_UPSTREAM_MESSAGE) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def upstream_error(exc: Exception, base_url: str) -> ModelError:
    """A :class:`ModelError` for what the SDK raised, with the upstream's message."""
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
                return await self.client.chat.completions.create(
                    **request, stream_options={"include_usage": True}
                )
            except openai.BadRequestError as exc:
                if "stream_options" not in str(exc.message):
                    raise
                log.info("the endpoint refuses stream_options; usage will be estimated")
                self.usage_in_stream = False
        return await self.client.chat.completions.create(**request)

    async def stream(
        self, messages: list[Message], tools: list[dict[str, Any]]
    ) -> AsyncIterator[TextDelta | ModelTurn]:
        text: list[str] = []
        calls: dict[int, _ToolCallParts] = {}
        usage: Usage | None = None
        finish: str | None = None
        chunks_seen = 0
        try:
            chunks = await self._open(messages, tools)
            async with chunks:
                async for chunk in chunks:
                    chunks_seen += 1
                    if chunk.usage is not None:
                        usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                    for choice in chunk.choices or ():
                        if choice.finish_reason:
                            finish = choice.finish_reason
                        delta = choice.delta
                        if delta is None:
                            continue
                        if delta.content:
                            text.append(delta.content)
                            yield TextDelta(delta.content)
                        for part in delta.tool_calls or ():
                            parts = calls.setdefault(
                                part.index if part.index is not None else len(calls), _ToolCallParts()
                            )
                            if part.id:
                                parts.id = part.id
                            if part.function is not None:
                                if part.function.name:
                                    parts.name += part.function.name
                                if part.function.arguments:
                                    parts.arguments.append(part.function.arguments)
        except ModelError:
            raise
        except (
            openai.APIError,
            json.JSONDecodeError,
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
        ) as exc:
            raise upstream_error(exc, self.base_url) from None
        if chunks_seen == 0:
            raise ModelError(
                f"the model's endpoint {self.base_url} answered something that is not a chat completion "
                "(an empty stream, or not server-sent events)"
            )
        tool_calls = [
            ToolCall(
                id=parts.id or f"call_{secrets.token_hex(8)}",
                name=parts.name,
                arguments="".join(parts.arguments),
            )
            for _, parts in sorted(calls.items())
        ]
        yield ModelTurn(content="".join(text), tool_calls=tool_calls, usage=usage, finish_reason=finish)
