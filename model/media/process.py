"""Run one ffmpeg/ffprobe process safely: timeout, byte caps, stderr summary.

Every process writes its outputs to pipes that we read here with a deadline; it is
killed when the deadline passes or an output outgrows its cap, so a hostile or
broken file can never hang a caller or fill its memory. One process may write
several outputs (video frames and audio samples in one pass): outputs are named in
the argument list by `output_target(i)` and mapped to pipes here.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from model.media.errors import DecodeTimeout, FFmpegMissing, OutputTooLarge

_STDERR_KEEP = 16 * 1024  # bytes of stderr kept for the error message
_CHUNK = 1 << 20
_PLACEHOLDER = "__mmv_output_{}__"
# "[h264 @ 0x55d1c9a3c0] " prefixes and hex addresses say nothing to a user.
_LOG_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")


def ffmpeg_binary(name: str) -> str:
    """Path of `ffmpeg` or `ffprobe`; MMV_FFMPEG / MMV_FFPROBE override the PATH lookup."""
    override = os.environ.get(f"MMV_{name.upper()}")
    found = override or shutil.which(name)
    if not found:
        raise FFmpegMissing(f"{name} is not installed (apt-get install ffmpeg)")
    return found


def input_url(path: str | Path) -> str:
    """The URL ffmpeg gets for a local file. The explicit `file:` protocol stops a
    name such as `-x.mp4` being read as an option or `concat:a|b` as a protocol."""
    return "file:" + str(Path(path).resolve())


def output_target(i: int) -> str:
    """Name output `i` of a process in its arguments; `run` maps it to a pipe."""
    return _PLACEHOLDER.format(i)


@dataclass
class OutputSpec:
    """How much one output may write. `exact_bytes`: the caller needs exactly this many
    (the buffer is preallocated and the process is stopped once every exact output
    is full); otherwise the output may grow up to `max_bytes`."""

    max_bytes: int
    exact_bytes: int | None = None


@dataclass
class RunResult:
    outputs: list[bytearray]
    returncode: int | None  # None: stopped by us once every exact output was full
    stderr: str
    elapsed_s: float = 0.0
    filled: list[int] = field(default_factory=list)  # bytes received per output

    def summary(self, path: str | Path | None = None) -> str:
        """What went wrong, from stderr; the file's directory is left out."""
        text = summarise_stderr(self.stderr)
        if path is not None:
            text = text.replace(str(Path(path).resolve()), Path(path).name)
        return text


def summarise_stderr(stderr: str, max_lines: int = 3, max_chars: int = 300) -> str:
    """The last few distinct lines of ffmpeg's log, without addresses: the part that
    says what went wrong."""
    lines: list[str] = []
    for raw in reversed(stderr.splitlines()):
        line = _LOG_PREFIX.sub("", raw.strip())
        line = line.replace("file:", "")
        if line and line not in lines:
            lines.append(line)
        if len(lines) == max_lines:
            break
    text = "; ".join(reversed(lines))
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


class _Sink:
    """Collects one output: into a preallocated buffer (exact) or growing chunks."""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        self.filled = 0
        self.eof = False
        self.buffer = bytearray(spec.exact_bytes) if spec.exact_bytes is not None else None
        self.chunks: list[bytes] = []

    @property
    def full(self) -> bool:
        return self.spec.exact_bytes is not None and self.filled >= self.spec.exact_bytes

    def read_from(self, fd: int) -> int:
        if self.buffer is not None and not self.full:
            view = memoryview(self.buffer)[self.filled :]
            n = os.readv(fd, [view[:_CHUNK]])
            self.filled += n
            return n
        data = os.read(fd, _CHUNK)
        # Bytes past an exact output's size are read (so ffmpeg does not block) and
        # dropped.
        if self.buffer is None:
            self.chunks.append(data)
            self.filled += len(data)
        return len(data)

    def value(self) -> bytearray:
        if self.buffer is not None:
            return self.buffer if self.filled >= len(self.buffer) else self.buffer[: self.filled]
        return bytearray().join(self.chunks)  # writable, so numpy views of it are too


def run(args: list[str], outputs: list[OutputSpec], *, timeout_s: float, what: str) -> RunResult:
    """Run `args` (a compiled ffmpeg/ffprobe command line) and collect its outputs.

    Output 0 is stdout; outputs 1.. are extra pipes. Raises DecodeTimeout after
    `timeout_s` and OutputTooLarge when an output passes its `max_bytes`; the process
    is killed in both cases. A non-zero exit status is returned, not raised: the
    caller knows whether partial output is still useful.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    extra = [os.pipe() for _ in outputs[1:]]  # (read end, write end) per extra output
    targets = {output_target(0): "pipe:1"}
    targets.update({output_target(i + 1): f"pipe:{w}" for i, (_, w) in enumerate(extra)})
    argv = [targets.get(a, a) for a in args]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=tuple(w for _, w in extra),
        )
    except BaseException as exc:
        for r, w in extra:
            os.close(r)
            os.close(w)
        if isinstance(exc, FileNotFoundError):
            raise FFmpegMissing(f"cannot start {argv[0]}: {exc}") from exc
        raise
    for _, w in extra:
        os.close(w)  # the child holds its own copy; ours would keep the pipe open forever
    assert proc.stdout is not None and proc.stderr is not None
    sinks = [_Sink(spec) for spec in outputs]
    fds = [proc.stdout.fileno()] + [r for r, _ in extra]
    stderr_tail: deque[bytes] = deque()
    stderr_size = 0
    stopped_early = False
    selector = selectors.DefaultSelector()
    try:
        for i, fd in enumerate(fds):
            selector.register(fd, selectors.EVENT_READ, i)
        selector.register(proc.stderr.fileno(), selectors.EVENT_READ, -1)
        open_fds = len(fds) + 1
        while open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DecodeTimeout(
                    f"{what}: ffmpeg did not finish within {timeout_s:g} s",
                    detail={"timeout_s": timeout_s},
                )
            for key, _ in selector.select(timeout=remaining):
                index = key.data
                if index == -1:
                    data = os.read(key.fd, _CHUNK)
                    stderr_tail.append(data)
                    stderr_size += len(data)
                    while stderr_size > _STDERR_KEEP and len(stderr_tail) > 1:
                        stderr_size -= len(stderr_tail.popleft())
                    n = len(data)
                else:
                    sink = sinks[index]
                    n = sink.read_from(key.fd)
                    # An exact output keeps only its buffer (a few surplus bytes, e.g.
                    # resampler tail, are dropped); a growing one is capped here.
                    if sink.buffer is None and sink.filled > sink.spec.max_bytes:
                        raise OutputTooLarge(
                            f"{what}: decoded output passed its cap of "
                            f"{sink.spec.max_bytes / 1e6:.1f} MB",
                            detail={"max_output_bytes": sink.spec.max_bytes},
                        )
                if n == 0:
                    selector.unregister(key.fd)
                    open_fds -= 1
                    if index >= 0:
                        sinks[index].eof = True
            if all(s.spec.exact_bytes is not None and s.full for s in sinks):
                stopped_early = True  # everything needed is here: don't wait for the rest
                break
        if stopped_early:
            returncode = None
        else:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                returncode = proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired as exc:
                raise DecodeTimeout(
                    f"{what}: ffmpeg did not finish within {timeout_s:g} s",
                    detail={"timeout_s": timeout_s},
                ) from exc
    finally:
        selector.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        for r, _ in extra:
            os.close(r)
    return RunResult(
        outputs=[s.value() for s in sinks],
        returncode=returncode,
        stderr=b"".join(stderr_tail).decode("utf-8", "replace"),
        elapsed_s=time.monotonic() - start,
        filled=[s.filled for s in sinks],
    )
