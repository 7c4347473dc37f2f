"""``aihub chat``: talk to the model about a connected workspace, from a terminal.

aihub chat [--hub URL] [--workspace NAME] [--conversation ID] [MESSAGE]

With MESSAGE, one turn; without, an interactive prompt (Ctrl-D or ``/exit`` to
leave; Ctrl-C during a turn cancels it). The model's words stream as they come,
each tool call is one line, a command's output is shown live. Any failure is one
line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
from rich.console import Console
from rich.text import Text

from schemas.protocol import TOKEN_FILE, aihub_home

DEFAULT_HUB = "http://127.0.0.1:8765"
#: Connecting and each read of the stream; a turn itself may take long.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 900.0


class ChatFailed(Exception):
    """One line for the user, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        message = " ".join(message.split())  # an upstream's message or a proxy's page may span lines
        super().__init__(message)
        self.message = message
        self.status = status


def add_parser(sub: Any) -> None:
    chat = sub.add_parser("chat", help="talk to the model about a connected workspace")
    chat.add_argument("message", nargs="?", help="one message; without it, an interactive prompt")
    chat.add_argument(
        "--hub",
        default=os.environ.get("AIHUB_URL", DEFAULT_HUB),
        help=f"the hub's URL (default {DEFAULT_HUB}, or AIHUB_URL)",
    )
    chat.add_argument("--workspace", "-w", help="workspace name or id (default: the only one connected)")
    chat.add_argument("--conversation", "-c", help="continue this conversation")
    chat.add_argument("--token", help="the hub's token (default: AIHUB_TOKEN, else the token file)")


def _token(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("AIHUB_TOKEN"):
        return os.environ["AIHUB_TOKEN"]
    path = aihub_home() / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if not token:
        raise ChatFailed(f"no token: pass --token, set AIHUB_TOKEN, or run the hub once to create {path}", 2)
    return token


def _http_url(hub: str) -> str:
    url = hub.rstrip("/")
    for ws, http in (("ws://", "http://"), ("wss://", "https://")):
        if url.startswith(ws):
            url = http + url[len(ws) :].removesuffix("/ws/workspace")
    return url


def _detail(response: httpx2.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text[:300]
    if not isinstance(detail, str):
        detail = json.dumps(detail)[:300]
    return f"the hub answered {response.status_code}: {detail}"


def _summary(arguments: Any) -> str:
    if isinstance(arguments, dict):
        parts = []
        for key, value in arguments.items():
            text = json.dumps(value, ensure_ascii=False)
            parts.append(f"{key}={text if len(text) <= 60 else text[:57] + '...'}")
        line = " ".join(parts)
    else:
        line = str(arguments)
    line = line.replace("\n", "\\n")
    return line if len(line) <= 160 else line[:157] + "..."


def _events(response: httpx2.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """Server-sent events as (name, data)."""
    name, data = "message", list[str]()
    for line in response.iter_lines():
        if line == "":
            if data:
                try:
                    value = json.loads("\n".join(data))
                except ValueError:
                    value = None
                if not isinstance(value, dict):
                    raise ChatFailed(
                        f"the hub sent a {name!r} event that is not a JSON object: {data[0][:100]!r}"
                    )
                yield name, value
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


@dataclass
class Chat:
    hub: str
    token: str
    workspace: str | None
    conversation: str | None
    console: Console = field(default_factory=lambda: Console(highlight=False))
    errors: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))
    http: httpx2.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx2.Client(
            base_url=self.hub,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx2.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )

    def _get(self, path: str) -> Any:
        try:
            response = self.http.get(path)
        except httpx2.HTTPError as exc:
            raise ChatFailed(f"cannot reach the hub at {self.hub}: {exc}") from None
        if response.status_code != 200:
            raise ChatFailed(_detail(response))
        return response.json()

    def pick_workspace(self) -> str:
        if self.workspace:
            return self.workspace
        workspaces = self._get("/api/workspaces")
        if not workspaces:
            raise ChatFailed("no workspace is connected: start aihub-client in your project first")
        if len(workspaces) > 1:
            names = ", ".join(f"{w['name']} ({w['id']})" for w in workspaces)
            raise ChatFailed(f"several workspaces are connected ({names}): choose one with --workspace")
        self.workspace = str(workspaces[0]["id"])
        return self.workspace

    def turn(self, message: str) -> None:
        workspace = self.pick_workspace()
        body: dict[str, Any] = {"message": message}
        if self.conversation:
            body["conversation_id"] = self.conversation
        try:
            with self.http.stream(
                "POST",
                f"/api/workspaces/{workspace}/chat",
                json=body,
                headers={"Accept": "text/event-stream"},
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise ChatFailed(_detail(response))
                try:
                    self._show(response)
                except KeyboardInterrupt:
                    self._cancel()
                    self.errors.print("cancelled")
        except httpx2.HTTPError as exc:
            raise ChatFailed(f"lost the hub at {self.hub}: {exc}") from None

    def _cancel(self) -> None:
        if self.conversation:
            with contextlib.suppress(httpx2.HTTPError):
                self.http.post(f"/api/conversations/{self.conversation}/cancel")

    def _show(self, response: httpx2.Response) -> None:
        out = self.console
        at_line_start = True
        for name, data in _events(response):
            if name == "start":
                self.conversation = str(data["conversation_id"])
            elif name == "text":
                out.print(Text(data.get("delta", "")), end="")
                at_line_start = str(data.get("delta", "")).endswith("\n")
            elif name == "tool_call":
                if not at_line_start:
                    out.print()
                out.print(
                    Text.assemble(
                        ("> ", "cyan"),
                        (str(data.get("tool")), "bold cyan"),
                        " ",
                        (_summary(data.get("arguments")), "dim"),
                    )
                )
                at_line_start = True
            elif name == "output":
                out.print(Text(str(data.get("data", "")), style="dim"), end="")
            elif name == "tool_result":
                ok = data.get("status") == "success"
                mark = ("  ok ", "green") if ok else ("  failed ", "red")
                line = Text.assemble(
                    mark, (str(data.get("tool")), "bold"), f" ({data.get('duration_ms', 0):.0f} ms)"
                )
                if not ok and data.get("error"):
                    line.append(f": {str(data['error'])[:300]}", "red")
                out.print(line)
            elif name == "done":
                if not at_line_start:
                    out.print()
                usage = data.get("usage", {})
                out.print(
                    Text(
                        f"[{data.get('stop_reason')} · {len(data.get('steps', []))} tool calls · "
                        f"{usage.get('total_tokens', 0)} tokens · conversation {data.get('conversation_id')}]",
                        style="dim",
                    )
                )
                if data.get("stop_reason") not in ("done", "cancelled"):
                    raise ChatFailed(f"the turn stopped early: {data.get('stop_reason')}", 3)
                return
            elif name == "error":
                raise ChatFailed(str(data.get("detail", "the turn failed")))
        raise ChatFailed("the hub ended the stream before the turn was done")

    def interactive(self) -> None:
        self.console.print(Text("aihub chat: Ctrl-D or /exit to leave, Ctrl-C stops a turn", style="dim"))
        while True:
            try:
                message = self.console.input("[bold]you> [/bold]").strip()
            except EOFError:
                self.console.print()
                return
            except KeyboardInterrupt:
                self.console.print()
                continue
            if message in ("/exit", "/quit"):
                return
            if not message:
                continue
            try:
                self.turn(message)
            except ChatFailed as exc:
                if exc.status == 3:
                    self.errors.print(Text(exc.message, style="yellow"), soft_wrap=True)
                    continue
                raise


def run(args: argparse.Namespace) -> int:
    errors = Console(stderr=True, highlight=False)
    try:
        chat = Chat(_http_url(args.hub), _token(args.token), args.workspace, args.conversation)
        if args.message is not None:
            chat.turn(args.message)
        else:
            chat.interactive()
    except ChatFailed as exc:
        errors.print(Text(f"aihub chat: {exc.message}", style="red"), soft_wrap=True)
        return exc.status
    except KeyboardInterrupt:
        return 130
    return 0


__all__ = ["add_parser", "run"]
