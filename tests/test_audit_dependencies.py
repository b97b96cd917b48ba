"""tools/audit_dependencies.py against a PyPI JSON API served on 127.0.0.1: which
findings fail `make test`, which are explained, which are only warned about."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# tools/ is a folder of scripts, not a package: load the script as a module.
_spec = importlib.util.spec_from_file_location(
    "audit_dependencies", REPO / "tools" / "audit_dependencies.py"
)
assert _spec is not None and _spec.loader is not None
audit = importlib.util.module_from_spec(_spec)
sys.modules["audit_dependencies"] = audit  # dataclasses look their module up there
_spec.loader.exec_module(audit)

FLAW = {"id": "GHSA-0000-1111-2222", "aliases": ["CVE-2099-1"], "fixed_in": ["2.1"],
        "summary": "a request can make it read any file", "withdrawn": None}  # fmt: skip


def project(newest: str, versions: list[str], flaws: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "info": {"version": newest},
        "releases": {v: [{"yanked": False}] for v in versions},
        "vulnerabilities": flaws,
    }


PAGES: dict[str, dict[str, Any]] = {
    "/pypi/clean/json": project("1.0", ["0.9", "1.0"], []),
    "/pypi/flawed/json": project("2.0", ["2.0"], [FLAW, {**FLAW, "id": "OLD", "withdrawn": "x"}]),
    "/pypi/behind/json": project("3.0", ["2.0", "3.0"], []),  # 2.0's own JSON: 404
    "/pypi/served/json": project("3.0", ["1.0", "3.0"], []),
    "/pypi/served/1.0/json": {"info": {"version": "1.0"}, "vulnerabilities": [FLAW]},
}


class FakePyPI(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/pypi/down/"):
            self.send_error(503)
            return
        page = PAGES.get(self.path)
        if page is None:
            self.send_error(404)
            return
        body = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pypi() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePyPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pypi"
    server.shutdown()
    server.server_close()


def run_audit(tmp_path: Path, pypi: str, lock: str, exceptions: str = "") -> int:
    (tmp_path / "requirements.lock").write_text(lock)
    (tmp_path / "exceptions.toml").write_text(exceptions)
    args = ["--lock", str(tmp_path / "requirements.lock"), "--no-pip-audit", "--pypi", pypi,
            "--exceptions", str(tmp_path / "exceptions.toml"), "--timeout", "5"]  # fmt: skip
    return audit.main(args)


def test_an_unexplained_vulnerability_fails_and_what_cannot_be_checked_is_said(
    tmp_path: Path, pypi: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = "clean==1.0\nFlawed==2.0\nbehind==2.0\nserved==1.0\ndown==1.0\nabsent==1.0\n"
    assert run_audit(tmp_path, pypi, lock) == 1
    out, err = capsys.readouterr()
    assert "VULNERABLE  flawed 2.0: GHSA-0000-1111-2222 (fixed in 2.1)" in out
    assert "VULNERABLE  served 1.0: GHSA-0000-1111-2222" in out  # its own JSON, served
    assert "OLD" not in out  # a withdrawn advisory is not a finding
    assert "not fully auditable: behind 2.0: newest is 3.0" in out
    assert "not fully auditable: absent 1.0: not on PyPI (404)" in out
    assert "audited 6 locked packages (PyPI JSON API): 2 vulnerable (2 unexplained), " in out
    assert "2 not fully auditable, 1 not reached" in out
    assert "THE DEPENDENCY AUDIT IS INCOMPLETE: 1 of 6 packages" in err  # down: 503
    assert "neither fixed nor explained" in err


def test_an_explained_vulnerability_passes_and_a_registry_down_only_warns(
    tmp_path: Path, pypi: str, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = "only reachable through the admin CLI, which the service never runs"
    exceptions = f'[[exception]]\npackage = "flawed"\nid = "CVE-2099-1"\nreason = "{reason}"\n'
    assert run_audit(tmp_path, pypi, "flawed==2.0\nclean==1.0\n", exceptions) == 0
    out, _ = capsys.readouterr()
    assert "explained   flawed 2.0: GHSA-0000-1111-2222" in out and reason in out
    # Nothing answers at all: a warning as loud as can be, and no failure.
    assert run_audit(tmp_path, "http://127.0.0.1:9/pypi", "clean==1.0\n") == 0
    out, err = capsys.readouterr()
    assert "1 not reached" in out and "THE DEPENDENCY AUDIT IS INCOMPLETE" in err
    with pytest.raises(SystemExit, match="needs package, id and a reason"):
        run_audit(tmp_path, pypi, "clean==1.0\n", '[[exception]]\npackage = "x"\nid = "y"\n')


def test_the_lock_pins_every_package_but_the_project_itself() -> None:
    locked = audit.read_lock(REPO / "requirements.lock")
    assert "mmv-search" not in locked
    assert {"torch", "fastapi", "starlette", "pip-audit"} <= set(locked)
    assert not [v for v in locked.values() if "+" in v]  # torch's +cpu is dropped


def test_the_lock_is_within_every_range_pyproject_gives() -> None:
    """`make venv` and the image install with the lock as constraints: a range raised in
    pyproject.toml past its locked version would make that install fail, so say which
    package and that `make lock` is due."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(line) for line in project["dependencies"]]
    wanted += [Requirement(line) for line in project["optional-dependencies"]["dev"]]
    locked = audit.read_lock(REPO / "requirements.lock")
    outside = [
        f"{req.name}{req.specifier}: locked {locked.get(audit.canonical(req.name), 'nothing')}"
        for req in wanted
        if audit.canonical(req.name) not in locked
        or not req.specifier.contains(locked[audit.canonical(req.name)], prereleases=True)
    ]
    assert not outside, "run `make lock` after changing pyproject.toml: " + "; ".join(outside)
