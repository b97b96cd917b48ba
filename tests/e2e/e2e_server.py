"""A real `python -m service` on 127.0.0.1 for end-to-end tests, and real media files.

Helpers, not fixtures: conftest.py wraps them; bench/service.py reuses them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0  # model load + index open + worker spawn on a busy 2-core machine
STOP_TIMEOUT_S = 60.0
SPEECH_TEXT = "the red ball bounces on the wooden floor"


class ServerFailed(RuntimeError):
    """The service did not come up or go down in time; carries the log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise ServerFailed(
                    f"the server did not stop within {timeout_s:.0f} s:\n{self.log()[-3000:]}"
                ) from None
        return int(self.process.returncode)


# Set by tests/e2e/conftest.py while a module runs against PostgreSQL: the database of a
# data directory (the same one each time, so a restarted server finds its items).
database_for: Callable[[Path], str] | None = None


def server_env(data_dir: Path, model_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MMV_DATABASE_URL", None)
    if database_for is not None:
        env["MMV_DATABASE_URL"] = database_for(data_dir)
        # One server at a time on a data directory keeps the SQLite layout (indexes/,
        # cache/ in it); tests of several replicas give each its own MMV_LOCAL_DIR.
        env["MMV_LOCAL_DIR"] = str(data_dir)
    env.update(
        {
            "MMV_DATA_DIR": str(data_dir),
            "MMV_MODEL": str(model_dir),
            "MMV_HOST": "127.0.0.1",
            "MMV_PORT": str(port),
            "MMV_WORKERS": "1",
            "MMV_DEMO_CLIPS": "0",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def start_server(data_dir: Path, model_dir: Path, log_path: Path, **settings: str) -> Server:
    """Start `python -m service` and wait for /readyz (bounded)."""
    port = free_port()
    env = server_env(data_dir, model_dir, port, **settings)
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "service"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    server = Server(f"http://127.0.0.1:{port}", process, log_path, data_dir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(
                f"the server exited with {process.returncode}:\n{server.log()[-3000:]}"
            )
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise ServerFailed(f"not ready within {START_TIMEOUT_S:.0f} s:\n{server.log()[-3000:]}")


@contextmanager
def running_server(
    data_dir: Path, model_dir: Path, log_path: Path, **settings: str
) -> Iterator[Server]:
    server = start_server(data_dir, model_dir, log_path, **settings)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Worker:
    """A real `python -m service.worker` on the same data directory as a server."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise ServerFailed(
                    f"the worker did not stop within {timeout_s:.0f} s:\n{self.log()[-3000:]}"
                ) from None
        return int(self.process.returncode)


def start_worker(data_dir: Path, model_dir: Path, log_path: Path, **settings: str) -> Worker:
    """Start `python -m service.worker` with the server's settings (no port needed)."""
    env = server_env(data_dir, model_dir, 0, **settings)
    env.pop("OMP_NUM_THREADS")  # the worker sets it per run, from MMV_TRAIN_THREADS
    # One training thread: a test's server, its clients and the other pytest process share
    # the 2 cores, and a second thread that finds no free core spins (a job took 3x longer).
    env.setdefault("MMV_TRAIN_THREADS", "1")
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.worker"], cwd=REPO, env=env, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    return Worker(process, log_path)


def training_running(job_id: str) -> bool:
    """A training process of `job_id` is alive (it stops by itself once its worker dies)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "service.worker.train_run" in cmdline and job_id in cmdline:
                return True
    return False


def wait_until(predicate: Any, timeout_s: float, what: str, every_s: float = 0.25) -> Any:
    """Poll `predicate()` until it returns something true; AssertionError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {value!r})")
        time.sleep(every_s)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and len(body["error"]["message"]) > 10
    assert set(body["error"]) <= {"code", "message", "detail"}
    return body["error"]


def make_random_model(out: Path, words: Iterable[str]) -> Path:
    """A randomly initialised tiny checkpoint that knows `words` (a fresh model knows
    none, so every text would embed alike): enough for exact-match behaviour."""
    from model import build_model, save_model

    model = build_model("tiny")
    model.grow_vocabulary(list(words))
    return save_model(model, out)


# -- media made by ffmpeg and espeak-ng --------------------------------------------------
def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


def make_clip(
    path: Path,
    picture: str = "testsrc",
    tone_hz: int | None = 440,
    seconds: float = 3.0,
    size: str = "160x120",
) -> Path:
    """h264 (+ aac sine tone unless tone_hz is None) mp4 from lavfi test sources."""
    args = ["-f", "lavfi", "-i", f"{picture}=size={size}:rate=10:duration={seconds}"]
    if tone_hz is not None:
        args += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:duration={seconds}"]
        args += ["-c:a", "aac", "-shortest"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    ffmpeg(*args, "-movflags", "+faststart", str(path))
    return path


def make_undecodable(path: Path, source: Path) -> Path:
    """A copy of a faststart mp4 whose media data is zeroed: ffprobe reads its header
    (a 3 s video), but no frame decodes."""
    data = bytearray(source.read_bytes())
    start = data.find(b"mdat") + 4 + 200
    data[start:] = bytes(len(data) - start)
    path.write_bytes(bytes(data))
    return path


def make_tone(path: Path, hz: int = 880, seconds: float = 3.0, rate: int = 16000) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency={hz}:duration={seconds}:sample_rate={rate}",
           str(path))  # fmt: skip
    return path


def make_noise(path: Path, color: str = "pink", seconds: float = 3.0) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"anoisesrc=color={color}:duration={seconds}:sample_rate=16000",
           str(path))  # fmt: skip
    return path


def make_picture(path: Path, size: str = "128x96", source: str = "testsrc") -> Path:
    ffmpeg("-f", "lavfi", "-i", f"{source}=size={size}:rate=1:duration=1", "-frames:v", "1",
           str(path))  # fmt: skip
    return path


def make_speech(path: Path, text: str) -> Path:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, timeout=60)
    return path
