"""A real Hub-protocol server on loopback for tests and benches: olah (a self-hosted Hugging Face mirror) serving
local git repos, in a virtual environment of its own (created once per olah version and cached).

    with OlahServer(mirror_root) as hub:        # mirror_root/{models,datasets}/ORG/NAME, branch main
        env = hub_env(hub.endpoint, tmp_path)   # HF_ENDPOINT and private, empty caches for a subprocess

olah's mirror mode answers the routes huggingface_hub, datasets and open_clip call for downloads (repo and
revision info, paths-info, tree, resolve); it has no upload routes (see tests/test_hub_e2e.py).
`DyingProxy` forwards to a server and goes away in the middle of the first file download it sees.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

OLAH_VERSION = "0.5.4"
START_TIMEOUT_S = 60.0
# Runs olah-cli (argv[1:]) after asking Linux for SIGTERM when the test process dies (PR_SET_PDEATHSIG survives
# exec), so a killed test run leaves no server behind; elsewhere it just runs olah-cli.
DIE_WITH_PARENT = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
except (OSError, AttributeError):
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""


class HubServerError(RuntimeError):
    """olah could not be installed or started; the message says why and what to do."""


def cache_root() -> Path:
    """Where test tools are cached between runs (`$XDG_CACHE_HOME/clip-search-test`, default ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "clip-search-test"


def olah_venv(version: str = OLAH_VERSION) -> Path:
    """The olah-cli executable of a virtual environment with olah==`version`, created on first use.

    A marker file written last tells a finished environment from one a killed run left half-made; a lock file
    keeps two test runs from building it at once.
    """
    venv = cache_root() / f"olah-venv-{version}"
    cli, marker = venv / "bin" / "olah-cli", venv / ".complete"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"olah-venv-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and cli.exists():
            return cli
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)], "create a virtual environment for olah")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              f"olah=={version}"], f"pip install olah=={version} (needs the package index)")
        marker.write_text(version)
    return cli


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).split()[-60:])
        raise HubServerError(f"cannot {what}: exit {done.returncode}: {tail}")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def olah_config(mirror_root: Path, port: int, work: Path) -> str:
    """olah.toml: mirror mode only, offline (else it asks huggingface.co first and answers 504 without it)."""
    netloc = f"127.0.0.1:{port}"
    return "\n".join([
        "[basic]", 'host = "127.0.0.1"', f"port = {port}", f'repos-path = "{work / "repos"}"',
        f'mirrors-path = ["{mirror_root}"]', 'mirror-scheme = "http"', f'mirror-netloc = "{netloc}"',
        f'mirror-lfs-netloc = "{netloc}"', "", "[accessibility]", "offline = true", ""])


class OlahServer:
    """olah serving `mirror_root` on a free loopback port; `endpoint` is what HF_ENDPOINT must be set to."""

    def __init__(self, mirror_root: Path, work: Path | None = None) -> None:
        self.mirror_root = Path(mirror_root)
        self.work = Path(work) if work is not None else self.mirror_root.parent / "olah"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self.log = self.work / "olah.log"

    def __enter__(self) -> OlahServer:
        cli = olah_venv()
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "olah.toml").write_text(olah_config(self.mirror_root, self.port, self.work))
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen([str(cli.parent / "python"), "-c", DIE_WITH_PARENT, str(cli), "-c",
                                              "olah.toml"], cwd=self.work, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise HubServerError(f"olah exited with {self._process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/api/whoami-v2", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer (401 without a token) means it is serving
            except OSError:
                time.sleep(0.2)
        raise HubServerError(f"olah did not answer on {self.endpoint} within {START_TIMEOUT_S:.0f} s: "
                             f"{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """The end of olah's output, for failure messages."""
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop olah (SIGTERM, then SIGKILL after 10 s)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)


def hub_env(endpoint: str, home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a process that talks to the Hub at `endpoint` with fresh caches under `home`."""
    env = {key: value for key, value in (base if base is not None else os.environ).items()
           if key not in {"HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN",
                          "HUGGING_FACE_HUB_TOKEN"}}
    env.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub"),
                "HF_DATASETS_CACHE": str(home / "hf" / "datasets"), "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1", "SEARCH_CACHE_DIR": str(home / "search-cache"),
                "GRADIO_ANALYTICS_ENABLED": "False"})
    return env


class DyingProxy:
    """A TCP proxy to `upstream` that, in the middle of the first file download whose path contains `path_part`
    (a `GET .../resolve/...` with a body, chunked or not), sends half the body, then closes every connection and
    its listening socket: the server is gone."""

    def __init__(self, upstream: str, path_part: bytes = b"/resolve/") -> None:
        self.path_part = path_part  # which downloads count: the first GET whose path contains this dies
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.died = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> DyingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.die()

    def die(self) -> None:
        """Close the listener and every open connection (RST), as a crashed server would."""
        self.died.set()
        with self._lock:
            sockets, self._sockets = [self._listener, *self._sockets], []
        for sock in sockets:
            _reset(sock)

    def _accept(self) -> None:
        while not self.died.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        download = False  # the request now on this connection fetches a file's bytes
        try:
            while not self.died.is_set():
                ready, _, _ = select.select([client, server], [], [], 0.2)
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        return
                    download = data.startswith(b"GET ") and self.path_part in data.split(b"\r\n", 1)[0]
                    server.sendall(data)
                if server in ready:
                    if download:
                        download = False
                        if self._half_then_die(server, client):
                            return
                        continue
                    data = server.recv(65536)
                    if not data:
                        return
                    client.sendall(data)
        except OSError:
            return
        finally:  # also a connection accepted while the proxy was dying: it must not hang until a timeout
            _reset(client)
            _reset(server)

    def _half_then_die(self, server: socket.socket, client: socket.socket) -> bool:
        """Send the response head and half its body, then die; a response without a body is passed on whole."""
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = server.recv(65536)
            if not chunk:
                client.sendall(response)
                return False
            response += chunk
        head, _, body = response.partition(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        chunked = b"transfer-encoding: chunked" in lines
        length = next((int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:")), 0)
        if not chunked and length < 2:
            client.sendall(response)
            return False
        wanted = length // 2 if not chunked else 2
        while len(body) < wanted:
            chunk = server.recv(65536)
            if not chunk:
                break
            body += chunk
        client.sendall(head + b"\r\n\r\n" + body[:wanted if not chunked else len(body) // 2])
        self.die()
        return True


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer's kernel would; closing twice is harmless."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
