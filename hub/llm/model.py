"""What the loop needs of a model: one streamed turn at a time.

A :class:`ChatModel` takes the conversation as Chat Completions messages and
the tools in the function-calling format, and yields :class:`TextDelta` as the
model writes, then exactly one :class:`ModelTurn`.  It raises
:class:`ModelError` when the model's endpoint fails (after its own retries).
Nothing here imports FastAPI or the openai SDK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

Message = dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    #: The raw JSON text the model wrote; it may not be JSON at all.
    arguments: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ModelTurn:
    """The model's whole answer to one request."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: None when the endpoint reports no usage (the loop then estimates it).
    usage: Usage | None = None
    finish_reason: str | None = None


class ModelError(Exception):
    """The model's endpoint failed: HTTP error, timeout, unreachable, or an answer that is not one.

    ``message`` is meant for the user and carries the upstream's own message;
    ``status`` is the upstream's HTTP status when there was one.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ChatModel(Protocol):
    @property
    def name(self) -> str:
        """Shown to users and recorded with each conversation."""
        ...

    def stream(
        self, messages: list[Message], tools: list[dict[str, Any]]
    ) -> AsyncIterator[TextDelta | ModelTurn]:
        """Yield text deltas as they come, then one ModelTurn; raise ModelError on failure."""
        ...
