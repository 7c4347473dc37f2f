"""The hub's CPU per chat turn: ``python -m benchmarks.chat_turns [-n 100]``.

A real ``aihub serve`` process and a real ``aihub-client`` (loopback only), with
the model played by the tests' scripted OpenAI-compatible server (real HTTP;
the only stand-in). Each turn is two model calls and one ``read_files``: the
model asks for the file, then answers. Prints the hub process's CPU per turn
(from /proc, steadier than wall time on a shared machine) for turns that each
start a conversation, then for turns that extend one conversation (whose
history the model is sent again each time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx2

from benchmarks.processes import (
    cpu_seconds,
    free_port,
    start_client,
    start_hub,
    stop,
    wait_connected,
    wait_healthy,
)
from tests.scripted_llm import Call, Reply, ScriptedLLM

TOKEN = "bench-chat-token-0123456789"  # noqa: S105 - a throwaway token for a loopback-only run


async def main(turns: int, chunks: int = 0, stream: bool = False) -> int:
    llm = ScriptedLLM().start()
    scratch = Path(tempfile.mkdtemp(prefix="aihub-chat-bench-"))
    project, home = scratch / "project", scratch / "home"
    project.mkdir()
    home.mkdir()
    (project / "small.py").write_text("print('hello')\n" * 10)
    port = free_port()
    env = {"AIHUB_HOME": str(home), "AIHUB_TOKEN": TOKEN}
    hub = start_hub(port, env, "--llm-base-url", llm.base_url, "--llm-model", "scripted")
    client = None
    try:
        async with httpx2.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as http:
            await wait_healthy(http)
            client = start_client(f"ws://127.0.0.1:{port}/ws/workspace", project, "bench", env)
            await wait_connected(http, "bench")

            # The scripted model streams its answer 7 characters a chunk.
            content = "done" if not chunks else ("word12 " * chunks)

            async def turn(conversation: str | None = None) -> str:
                llm.add(Reply(calls=[Call("read_files", {"files": ["small.py"]})]), Reply(content=content))
                body = {"message": "read small.py"} | (
                    {"conversation_id": conversation} if conversation else {}
                )
                if not stream:
                    answer = await http.post("/api/workspaces/bench/chat", json=body)
                    if answer.status_code != 200:
                        raise RuntimeError(f"chat turn failed: {answer.status_code} {answer.text[:300]}")
                    return str(answer.json()["conversation_id"])
                headers = {"Accept": "text/event-stream"}
                async with http.stream(
                    "POST", "/api/workspaces/bench/chat", json=body, headers=headers
                ) as events:
                    if events.status_code != 200:
                        raise RuntimeError(f"chat turn failed: {events.status_code}")
                    text = "".join([piece async for piece in events.aiter_text()])
                if "event: done" not in text:
                    raise RuntimeError(f"the turn's stream did not end with done: {text[-300:]}")
                start = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])  # the `start` event
                return str(start["conversation_id"])

            for _ in range(5):
                await turn()
            for label, conversation in (
                ("a new conversation each turn", None),
                ("one conversation growing", await turn()),
            ):
                before, started = cpu_seconds(hub.pid), time.perf_counter()
                for _ in range(turns):
                    await turn(conversation)
                per_turn = (cpu_seconds(hub.pid) - before) / turns * 1000
                wall = (time.perf_counter() - started) / turns * 1000
                print(
                    f"{label:<32} hub CPU {per_turn:6.2f} ms/turn, wall {wall:6.1f} ms/turn ({turns} turns)"
                )
    finally:
        await stop([client, hub])
        llm.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chat_turns")
    parser.add_argument("-n", type=int, default=100, help="turns per figure (default 100)")
    parser.add_argument(
        "--chunks", type=int, default=0, help="chunks of text in the model's answer (default: one)"
    )
    parser.add_argument("--stream", action="store_true", help="ask for the turn's events as a stream (SSE)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.n, args.chunks, args.stream)))
