"""ffmpeg and ffprobe under CPU-time and memory limits (RLIMIT_CPU, RLIMIT_AS): real
processes on real files, each stopped by the kernel and reported as a typed error."""

from __future__ import annotations

import resource
import subprocess
import threading
import time
from pathlib import Path

import pytest
from media_fixtures import ffmpeg_make
from test_media import TINY, _ffmpeg_children

from model.media import (
    DEFAULT_LIMITS,
    CPULimitExceeded,
    MediaLimits,
    MemoryLimitExceeded,
    decode_image,
    load_windows,
    read_media_info,
)
from model.media.process import OutputSpec, _limit, run


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("limits")
    f: dict[str, Path] = {}
    # Costly to decode, cheap to make: two 2048² HEVC frames, stream-copied 80 times.
    # Decoding the 160 frames takes ~2.2 s of CPU (0.4 s to make).
    ffmpeg_make(
        "-f", "lavfi", "-i", "testsrc2=size=2048x2048:rate=2:duration=1",
        "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "bframes=0:log-level=error",
        str(d / "two.mp4"),
    )  # fmt: skip
    f["costly"] = d / "costly.mp4"
    ffmpeg_make("-stream_loop", "79", "-i", str(d / "two.mp4"), "-c", "copy", str(f["costly"]))
    # 4096² RGBA at 16 bits: a 128 MB frame, ~400 MB of address space to decode.
    f["deep_png"] = d / "deep.png"
    ffmpeg_make(
        "-f", "lavfi", "-i", "color=c=gray:size=4096x4096", "-frames:v", "1",
        "-pix_fmt", "rgba64be", str(f["deep_png"]),
    )  # fmt: skip
    # What the service must take under its default limits: 20 s of 640×480 with sound,
    # and a picture at the service's pixel cap.
    f["clip"] = d / "clip.mp4"
    ffmpeg_make(
        "-f", "lavfi", "-i", "testsrc2=size=640x480:rate=10:duration=20",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=20",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
        str(f["clip"]),
    )  # fmt: skip
    f["big_png"] = d / "big.png"
    ffmpeg_make("-f", "lavfi", "-i", "testsrc2=size=4096x4096", "-frames:v", "1", str(f["big_png"]))
    return f


def _watch_threads(stop: threading.Event, seen: list[int]) -> None:
    """Thread counts of this process's ffmpeg children, sampled until `stop`."""
    while not stop.is_set():
        for pid in _ffmpeg_children():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue  # it ended meanwhile
            seen += [int(line.split()[1]) for line in status.splitlines() if "Threads:" in line]
        stop.wait(0.02)


def test_a_decode_past_its_cpu_time_is_stopped(files: dict[str, Path]) -> None:
    path = files["costly"]
    info = read_media_info(path)
    started = time.monotonic()
    stop, threads = threading.Event(), []
    watcher = threading.Thread(target=_watch_threads, args=(stop, threads))
    watcher.start()
    try:
        with pytest.raises(CPULimitExceeded) as caught:
            tight = MediaLimits(cpu_s=0.5, whole_file_s_per_s=0.0)  # not scaled by length
            load_windows(path, TINY, 1, info, limits=tight, strategy="single")
    finally:
        stop.set()
        watcher.join()
    # One thread: the rawvideo encoder used to start one per core, each with a stack and
    # a malloc arena, so the memory a decode needs depended on the host.
    assert threads and max(threads) == 1, threads
    assert caught.value.code == "decode_timeout"  # the API's 422 for "took too long"
    assert caught.value.detail == {"cpu_limit_s": 1}  # RLIMIT_CPU counts whole seconds
    assert "1 s of CPU time" in str(caught.value) and "costly.mp4" in str(caught.value)
    assert time.monotonic() - started < 30  # 1 s of CPU, however busy the machine is
    assert not _ffmpeg_children()


def test_ffprobe_killed_by_its_cpu_limit_is_reported_too() -> None:
    # ffprobe does not catch SIGXCPU (ffmpeg does, and exits 255): the kernel's signal
    # ends it. Counting the frames of an endless generated picture never finishes alone.
    args = ["ffprobe", "-v", "error", "-count_frames", "-show_streams",
            "-f", "lavfi", "-i", "testsrc2=size=640x480"]  # fmt: skip
    with pytest.raises(CPULimitExceeded):
        run(args, [OutputSpec(max_bytes=1 << 20)], timeout_s=60, what="probing", cpu_s=1)
    assert not _ffmpeg_children()


def test_a_decode_past_its_memory_is_stopped(files: dict[str, Path]) -> None:
    path = files["deep_png"]
    info = read_media_info(path)  # probing needs less than decoding the whole frame
    with pytest.raises(MemoryLimitExceeded) as caught:
        decode_image(path, size=64, limits=MediaLimits(memory_mb=300), info=info)
    assert caught.value.code == "too_large"
    assert caught.value.detail == {"memory_limit_mb": 300}
    assert "300 MB of memory" in str(caught.value)
    assert not _ffmpeg_children()


def test_ordinary_media_decodes_under_the_default_limits(files: dict[str, Path]) -> None:
    """The defaults (the service's too) never trip on media within the service's caps:
    measured, the 20 s clip needs ~270 MB and 0.3 s of CPU, a 4096² picture ~315 MB,
    its 16-bit version ~400 MB, against 2048 MB and 120 s."""
    assert (DEFAULT_LIMITS.cpu_s, DEFAULT_LIMITS.memory_mb) == (120.0, 2048)
    clip = load_windows(files["clip"], TINY, None, limits=DEFAULT_LIMITS, speech_rate=16000)
    assert clip.video is not None and clip.speech is not None
    assert len(clip.speech) == pytest.approx(20 * 16000, rel=0.01)
    for name in ("big_png", "deep_png"):
        picture = decode_image(files[name], size=64, limits=DEFAULT_LIMITS)
        assert picture.shape == (64, 64, 3)


def test_a_lower_limit_the_process_inherited_is_kept() -> None:
    """ffmpeg inherits the limits of whoever starts it: a media worker's own, or the
    operator's (`ulimit -v`, systemd's LimitAS=). Asking for more than that hard limit
    must neither fail (EPERM, without root) nor raise it (with root)."""
    inherited = (700 * 2**20, 3)  # RLIMIT_AS bytes, RLIMIT_CPU seconds
    asked = (2048 * 2**20, 120)
    with subprocess.Popen(["sleep", "30"]) as lowered, subprocess.Popen(["sleep", "30"]) as free:
        try:
            resource.prlimit(lowered.pid, resource.RLIMIT_AS, (inherited[0], inherited[0]))
            resource.prlimit(lowered.pid, resource.RLIMIT_CPU, (inherited[1], inherited[1]))
            assert _limit(lowered.pid, asked[1], asked[0]) == inherited[1]
            assert resource.prlimit(lowered.pid, resource.RLIMIT_AS) == (inherited[0],) * 2
            assert resource.prlimit(lowered.pid, resource.RLIMIT_CPU) == (inherited[1],) * 2
            # Without an inherited limit, the ones asked for (CPU: SIGKILL 2 s after SIGXCPU).
            assert _limit(free.pid, asked[1], asked[0]) == asked[1]
            assert resource.prlimit(free.pid, resource.RLIMIT_AS) == (asked[0],) * 2
            assert resource.prlimit(free.pid, resource.RLIMIT_CPU) == (asked[1], asked[1] + 2)
        finally:
            lowered.kill()
            free.kill()
