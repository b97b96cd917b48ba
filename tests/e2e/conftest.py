"""Fixtures for end-to-end tests: a random tiny checkpoint, real media files, servers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import e2e_server
import pytest
from e2e_server import (
    REPO,
    SPEECH_TEXT,
    Server,
    make_clip,
    make_noise,
    make_picture,
    make_random_model,
    make_speech,
    make_tone,
    make_undecodable,
    running_server,
)

VOCABULARY = (
    "red blue green ball cup dog moon bounces falls barks drum rolls wooden floor small "
    "delete soon inserted paging query anything warm secret tone noise clip picture"
)


SOAK = os.environ.get("MMV_TEST_SOAK") == "1"  # make soak: every test on both engines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` stays within 15 minutes on 2 cores: tests marked `postgres_in_soak`
    (retrieval quality, keys, the browser's policy, the page's training panel, DDP: what
    they check beyond storage is the same on either engine, and jobs and switches on
    PostgreSQL are tested elsewhere) run on SQLite only there; `make soak` runs them on
    PostgreSQL too."""
    if SOAK:
        return
    kept, dropped = [], []
    for item in items:
        on_postgres = "[postgresql" in item.nodeid or "-postgresql" in item.nodeid
        in_soak = on_postgres and item.get_closest_marker("postgres_in_soak") is not None
        (dropped if in_soak else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="module", params=("sqlite", "postgresql"), autouse=True)
def e2e_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every end-to-end module runs twice: on SQLite, and on PostgreSQL (a database of
    the session's throwaway server per data directory the module starts servers on)."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    cluster = request.getfixturevalue("postgres_cluster")
    databases: dict[Path, str] = {}

    def database_for(data_dir: Path) -> str:
        key = Path(data_dir).resolve()
        if key not in databases:
            databases[key] = cluster.create_database()
        return databases[key]

    e2e_server.database_for = database_for
    try:
        yield "postgresql"
    finally:
        e2e_server.database_for = None


@pytest.fixture(scope="session")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny checkpoint: enough for exact-match behaviour.

    It carries the default model's speech-recognition language model, as every
    checkpoint `make model` writes does: how pocketsphinx decodes (and fails on
    sounds without speech) depends on it, so uploads are recognised as in production."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from model.asr.language_model import DICT_FILE, LM_FILE

    out = make_random_model(tmp_path_factory.mktemp("model") / "tiny-random", VOCABULARY.split())
    for name in (LM_FILE, DICT_FILE):
        shutil.copyfile(REPO / "models" / "default" / name, out / name)
    return out


@pytest.fixture(scope="session")
def trained_model() -> Path:
    """models/default (trained on the corpus); tests of retrieval quality need it."""
    path = REPO / "models" / "default"
    if not (path / "config.json").is_file():
        pytest.skip(
            "models/default is not trained yet: retrieval-quality tests need the trained "
            "default model (make model); exact-match behaviour is tested with a random one"
        )
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real encoded files: video with sound, silent video, wav, png, speech, junk."""
    d = tmp_path_factory.mktemp("media")
    files = {
        "clip": make_clip(d / "clip.mp4", "testsrc", 440),
        "clip2": make_clip(d / "clip2.mp4", "smptebars", 660),
        "silent": make_clip(d / "silent.mp4", "testsrc2", None),
        "tone": make_tone(d / "tone.wav", 880),
        "noise": make_noise(d / "noise.wav", "brown"),
        "picture": make_picture(d / "picture.png"),
        "speech": make_speech(d / "speech.wav", SPEECH_TEXT),
    }
    text = d / "notes.txt"
    text.write_text("this is not a media file\n" * 20)
    files["text_file"] = text
    # A wav named .png: the type comes from the content, never the name.
    files["disguised"] = make_tone(d / "disguised.wav", 1250).rename(d / "really-a-wav.png")
    files["undecodable"] = make_undecodable(d / "undecodable.mp4", files["silent"])
    files["long"] = make_tone(d / "long.wav", 500, seconds=25.0)  # over the 20 s cap
    files["big_picture"] = make_picture(d / "big.png", size="1024x768")  # over 640×480
    return files


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, random_model: Path, e2e_database: str
) -> Iterator[Server]:
    """One open server (no keys) per test module, with small caps to test them."""
    d = tmp_path_factory.mktemp("server")
    with running_server(
        d / "data",
        random_model,
        d / "server.log",
        MMV_MAX_UPLOAD_MB="2",
        MMV_UPLOAD_IDLE_S="10",  # a stalled body is cut off within a test's patience
        MMV_MAX_DURATION_S="20",
        MMV_MAX_PIXELS=str(640 * 480),
        MMV_SEARCH_BATCH_MS="2",
    ) as s:
        yield s
