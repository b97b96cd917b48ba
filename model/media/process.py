"""Run one ffmpeg/ffprobe process safely: timeout, CPU and memory limits, byte caps,
stderr summary.

Every process writes its outputs to pipes that we read here with a deadline; it is
killed when the deadline passes or an output outgrows its cap, so a hostile or
broken file can never hang a caller or fill its memory. The process itself runs under
RLIMIT_CPU and RLIMIT_AS (Linux), so a file that makes a decoder spin on every core or
allocate without end is stopped by the kernel too. One process may write several
outputs (video frames and audio samples in one pass): outputs are named in the
argument list by `output_target(i)` and mapped to pipes here.
"""

from __future__ import annotations

import math
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from model.media.errors import (
    CPULimitExceeded,
    DecodeTimeout,
    FFmpegMissing,
    MemoryLimitExceeded,
    OutputTooLarge,
)

_STDERR_KEEP = 16 * 1024  # bytes of stderr kept for the error message
_CHUNK = 1 << 20
_PLACEHOLDER = "__mmv_output_{}__"
# "[h264 @ 0x55d1c9a3c0] " prefixes and hex addresses say nothing to a user.
_LOG_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")
# How ffmpeg and the loader say that an allocation or a mapping failed (ENOMEM's text,
# libav's "out of memory", a thread whose stack could not be mapped).
_NO_MEMORY = re.compile(
    r"Cannot allocate memory|out of memory|failed to map segment|"
    r"pthread_create failed|get_buffer\(\) failed|bad_alloc",
    re.IGNORECASE,
)
# Seconds of CPU between SIGXCPU (soft limit) and SIGKILL (hard limit): ffmpeg catches
# SIGXCPU and stops cleanly; the hard limit is for a process that does not.
_CPU_GRACE_S = 2
# wait4's rusage reports 83–94 % of the CPU time the kernel's limit counted when it
# signalled (measured with limits of 1–3 s): a process stopped at its limit shows at
# least this share of it.
_CPU_SEEN_SHARE = 0.75


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


def commonest_line(stderr: str, path: str | Path | None = None) -> str:
    """ffmpeg's most repeated log line, without addresses: for a stream that fails on
    every packet, what it says each time (the last lines are often incidental)."""
    counts = Counter(
        line
        for raw in stderr.splitlines()
        if (line := _LOG_PREFIX.sub("", raw.strip()).replace("file:", ""))
        and not line.startswith("Last message repeated")
    )
    if not counts:
        return ""
    text = counts.most_common(1)[0][0]
    if path is not None:
        text = text.replace(str(Path(path).resolve()), Path(path).name)
    return text if len(text) <= 300 else text[:299] + "…"


def summarise_stderr(stderr: str, max_lines: int = 3, max_chars: int = 300) -> str:
    """The last few distinct lines of ffmpeg's log, without addresses: the part that
    says what went wrong."""
    lines: list[str] = []
    for raw in reversed(stderr.splitlines()):
        line = _LOG_PREFIX.sub("", raw.strip())
        line = line.replace("file:", "")
        if line and line not in lines and not line.startswith("Last message repeated"):
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


def run(
    args: list[str],
    outputs: list[OutputSpec],
    *,
    timeout_s: float,
    what: str,
    cpu_s: float | None = None,
    memory_bytes: int | None = None,
) -> RunResult:
    """Run `args` (a compiled ffmpeg/ffprobe command line) and collect its outputs.

    Output 0 is stdout; outputs 1.. are extra pipes. Raises DecodeTimeout after
    `timeout_s` and OutputTooLarge when an output passes its `max_bytes`; the process
    is killed in both cases. `cpu_s` (whole seconds, rounded up) and `memory_bytes`
    (address space) limit the process itself: CPULimitExceeded / MemoryLimitExceeded
    when it ran out of either, whatever it wrote before. Any other non-zero exit status
    is returned, not raised: the caller knows whether partial output is still useful.
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
    cpu_limit = _limit(proc.pid, cpu_s, memory_bytes)
    cpu_used: float | None = None
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
            try:
                returncode, cpu_used = _reap(proc, deadline)
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
    stderr = b"".join(stderr_tail).decode("utf-8", "replace")
    # SIGXCPU kills ffprobe; ffmpeg catches it and exits 255; past the hard limit, SIGKILL.
    # The CPU time used tells those apart from other failures (Ctrl-C also gives 255).
    out_of_cpu = returncode == -signal.SIGXCPU or (
        cpu_used is not None and cpu_limit is not None and cpu_used >= _CPU_SEEN_SHARE * cpu_limit
    )
    if returncode not in (0, None) and cpu_limit is not None and out_of_cpu:
        raise CPULimitExceeded(
            f"{what}: ffmpeg used up its {cpu_limit} s of CPU time; the file is too "
            "costly to decode",
            detail={"cpu_limit_s": cpu_limit},
        )
    if memory_bytes is not None and returncode is not None and _NO_MEMORY.search(stderr):
        raise MemoryLimitExceeded(
            f"{what}: ffmpeg needed more than its {memory_bytes / 2**20:.0f} MB of memory; "
            "the file is too large to decode",
            detail={"memory_limit_mb": round(memory_bytes / 2**20)},
        )
    return RunResult(
        outputs=[s.value() for s in sinks],
        returncode=returncode,
        stderr=stderr,
        elapsed_s=time.monotonic() - start,
        filled=[s.filled for s in sinks],
    )


def _limit(pid: int, cpu_s: float | None, memory_bytes: int | None) -> int | None:
    """Put the started process under RLIMIT_CPU / RLIMIT_AS; returns the CPU limit in
    whole seconds (None: none).

    Set from here with prlimit(2) rather than in a preexec_fn (unsafe in a process with
    threads, which the service is). The limits land microseconds after exec: CPU time
    counts from the process's start anyway, and the address space it can take before
    then is the loader's few mappings. A limit the child inherited that is already
    lower (a hard limit only root may raise) is kept."""
    cpu_limit = None if cpu_s is None else max(1, math.ceil(cpu_s))
    try:
        if cpu_limit is not None:
            cpu_limit = _lower(pid, resource.RLIMIT_CPU, cpu_limit, _CPU_GRACE_S)
        if memory_bytes is not None:
            _lower(pid, resource.RLIMIT_AS, memory_bytes, 0)
    except ProcessLookupError:
        pass  # it has exited already: nothing left to limit
    return cpu_limit


def _lower(pid: int, which: int, soft: int, grace: int) -> int:
    """Set `which` of `pid` to (soft, soft + grace), never above what it has: returns
    the soft limit in force."""
    _, hard = resource.prlimit(pid, which)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
        wanted_hard = min(soft + grace, hard)
    else:
        wanted_hard = soft + grace
    resource.prlimit(pid, which, (soft, wanted_hard))
    return soft


def _reap(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, float | None]:
    """Wait until `deadline` for `proc` to exit: (exit status as Popen reports it, CPU
    seconds it used). wait4(2) rather than Popen.wait, which does not report the CPU
    time that tells the CPU limit's SIGKILL apart from another."""
    delay = 0.0005
    while True:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): as Popen does
            proc.returncode = proc.returncode if proc.returncode is not None else 0
            return proc.returncode, None
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise subprocess.TimeoutExpired(proc.args, 0)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)
