"""A scripted OpenAI-compatible server: the only stand-in in our tests, for the LLM itself.

It serves ``POST /v1/chat/completions`` over real HTTP (uvicorn in a thread on a
free 127.0.0.1 port), streamed as Chat Completions chunks when asked, exactly as
the ``openai`` SDK in the hub expects. Each request takes the next entry of the
script: a :class:`Reply` (text and tool calls), a :class:`Fail` (an HTTP error or
garbage), a :class:`Raw` stream (chunks as given: malformed, cut, endless), or a callable that builds a Reply from the request (so a step can use
what an earlier tool answered). Every request body is kept for assertions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse


@dataclass
class Call:
    name: str
    arguments: Any  # a dict is sent as JSON; a str is sent as it is (maybe not JSON)
    id: str | None = None


@dataclass
class Reply:
    content: str = ""
    calls: list[Call] = field(default_factory=list)
    #: Seconds to wait before answering (a slow model).
    delay: float = 0.0
    usage: tuple[int, int] | None = (100, 20)


@dataclass
class Fail:
    status: int = 500
    body: str = '{"error": {"message": "scripted upstream failure", "type": "server_error"}}'
    #: Answer 200 with this text instead of an HTTP error.
    garbage: str | None = None
    delay: float = 0.0


@dataclass
class Raw:
    """A stream sent as it is, for a broken or hostile endpoint.

    Each chunk is a dict (the fields of one ``data:`` chunk, such as ``choices``
    or ``usage``, sent as JSON) or a str (sent verbatim). ``pause`` seconds pass
    between chunks; ``cut`` drops the connection at the end instead of finishing
    the response; ``forever`` repeats the last chunk until the hub hangs up.
    """

    chunks: list[dict[str, Any] | str]
    pause: float = 0.0
    cut: bool = False
    forever: bool = False


class _Cut(Exception):
    """Raised in a response's body: uvicorn drops the connection mid-body."""


Step = Reply | Fail | Raw | Callable[[dict[str, Any]], Reply]


class ScriptedLLM:
    def __init__(self) -> None:
        self.script: list[Step] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.app = FastAPI()
        self.app.post("/v1/chat/completions", response_model=None)(self._completions)
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.port = 0
        #: What to answer when the script is used up.
        self.default: Step = Reply("(the script is used up)")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add(self, *steps: Step) -> None:
        with self._lock:
            self.script.extend(steps)

    def _next(self, body: dict[str, Any]) -> Reply | Fail | Raw:
        with self._lock:
            self.requests.append(body)
            step = self.script.pop(0) if self.script else self.default
        return step(body) if callable(step) else step

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        step = self._next(body)
        if isinstance(step, Raw):
            return StreamingResponse(self._raw(step), media_type="text/event-stream")
        if step.delay:
            await asyncio.sleep(step.delay)
        if isinstance(step, Fail):
            if step.garbage is not None:
                media = "text/event-stream" if body.get("stream") else "application/json"
                return PlainTextResponse(step.garbage, media_type=media)
            return Response(step.body, status_code=step.status, media_type="application/json")
        calls = [
            {
                "id": c.id or f"call_{next(self._ids)}",
                "name": c.name,
                "arguments": c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments),
            }
            for c in step.calls
        ]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._chunks(body, step, calls, include_usage), media_type="text/event-stream"
            )
        message: dict[str, Any] = {"role": "assistant", "content": step.content or None}
        if calls:
            message["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ]
        return JSONResponse(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "scripted"),
                "choices": [
                    {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
                ],
                "usage": self._usage(step),
            }
        )

    @staticmethod
    def _usage(step: Reply) -> dict[str, int] | None:
        if step.usage is None:
            return None
        prompt, completion = step.usage
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def _chunks(
        self, body: dict[str, Any], step: Reply, calls: list[dict[str, Any]], include_usage: bool
    ) -> AsyncIterator[str]:
        base = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        text = step.content
        for start in range(0, len(text), 7):  # words arrive in pieces
            yield chunk({"content": text[start : start + 7]})
        for index, c in enumerate(calls):
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": ""},
                        }
                    ]
                }
            )
            args = c["arguments"]
            half = len(args) // 2
            for piece in (args[:half], args[half:]):
                if piece:
                    yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, "tool_calls" if calls else "stop")
        if include_usage and step.usage is not None:
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': self._usage(step)})}\n\n"
        yield "data: [DONE]\n\n"

    @staticmethod
    async def _raw(step: Raw) -> AsyncIterator[str]:
        base = {"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 0, "model": "scripted"}

        def event(chunk: dict[str, Any] | str) -> str:
            if isinstance(chunk, str):
                return chunk
            return f"data: {json.dumps({**base, **chunk})}\n\n"

        for chunk in step.chunks:
            yield event(chunk)
            await asyncio.sleep(step.pause)
        while step.forever:
            yield event(step.chunks[-1])
            await asyncio.sleep(step.pause)
        if step.cut:
            raise _Cut("the scripted stream is cut here")

    # --- lifecycle --------------------------------------------------------

    def start(self) -> ScriptedLLM:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the scripted LLM server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)

    # --- reading what the hub sent ------------------------------------------

    def tool_messages(self, request: int = -1) -> dict[str, Any]:
        """The tool answers new in a request (after its last assistant message), by tool_call_id,
        each parsed from JSON when it is JSON."""
        answers = {}
        messages = self.requests[request]["messages"]
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
        for m in messages[last + 1 :]:
            if m.get("role") == "tool":
                try:
                    answers[m["tool_call_id"]] = json.loads(m["content"])
                except ValueError:
                    answers[m["tool_call_id"]] = m["content"]
        return answers
