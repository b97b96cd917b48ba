"""Known vulnerabilities of the locked dependencies (`make audit`, run by `make test`).

    python tools/audit_dependencies.py                  # audit requirements.lock
    python tools/audit_dependencies.py --write-lock     # rewrite it from this environment

Every package of requirements.lock is checked, by pip-audit when it is installed and its
vulnerability service answers, else by PyPI's JSON API (https://pypi.org/pypi/NAME/json).
That API lists the vulnerabilities of a project's newest release only; a locked version
that is the newest is audited exactly, an older one is audited through the per-version
API where PyPI serves it, and is otherwise reported as not fully auditable, saying why.

A vulnerability fails the audit (exit status 1) unless audit-exceptions.toml explains it.
A registry that does not answer is a loud warning, not a failure: CI must not go red
because of a network hiccup, and nobody may read "no vulnerabilities" into it either.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
EXCEPTIONS = ROOT / "audit-exceptions.toml"
PYPI = "https://pypi.org/pypi"
PROJECT = "mmv-search"  # this repository's own package: not a dependency
LOCK_HEADER = """\
# The exact versions of every package `make test` installs (the project itself left out).
# Written from the venv by `make lock`; audited by `make audit` (tools/audit_dependencies.py).
# Local version labels (torch's +cpu) are dropped: PyPI knows the release without them.
"""


def canonical(name: str) -> str:
    """PEP 503 name: case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    return version.split("+", 1)[0]


# -- the lock ---------------------------------------------------------------------------
def installed() -> dict[str, str]:
    """canonical name -> version of every distribution in this environment."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonical(name) != PROJECT:
            found[canonical(name)] = public_version(dist.version)
    return found


def write_lock(path: Path) -> int:
    packages = installed()
    lines = [f"{name}=={packages[name]}" for name in sorted(packages)]
    path.write_text(LOCK_HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path.name}: {len(lines)} packages")
    return 0


def read_lock(path: Path) -> dict[str, str]:
    locked: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise SystemExit(f"{path.name}:{number}: expected NAME==VERSION, got {raw!r}")
        locked[canonical(name.strip())] = version.strip()
    return locked


def drift(locked: dict[str, str]) -> list[str]:
    """Where this environment differs from the lock (then the audit is of the lock)."""
    have = installed()
    out = [
        f"{name}: locked {version}, installed {have[name]}"
        for name, version in sorted(locked.items())
        if name in have and have[name] != version
    ]
    out += [f"{name}: locked but not installed" for name in sorted(set(locked) - set(have))]
    out += [f"{name}: installed but not locked" for name in sorted(set(have) - set(locked))]
    return out


# -- findings -----------------------------------------------------------------------------
@dataclass
class Vulnerability:
    id: str
    aliases: list[str]
    fixed_in: list[str]
    summary: str

    def names(self) -> set[str]:
        return {self.id, *self.aliases}


@dataclass
class Result:
    name: str
    version: str
    vulnerabilities: list[Vulnerability] = field(default_factory=list)
    not_auditable: str | None = None  # why its vulnerabilities are unknown
    unreachable: str | None = None  # the registry did not answer
    note: str | None = None  # e.g. a yanked release


def _vulnerability(entry: dict) -> Vulnerability:
    """From PyPI's entry (id, aliases, fixed_in, summary/details) or pip-audit's
    (id, aliases, fix_versions, description)."""
    text = entry.get("summary") or entry.get("details") or entry.get("description") or ""
    lines = str(text).strip().splitlines()
    return Vulnerability(
        id=str(entry.get("id")),
        aliases=[str(a) for a in entry.get("aliases") or []],
        fixed_in=[str(v) for v in entry.get("fixed_in") or entry.get("fix_versions") or []],
        summary=lines[0][:160] if lines else "",
    )


def _get_json(url: str, timeout_s: float, deadline: float) -> dict | None:
    """The JSON at `url`; None on 404. Network failures, and a `deadline` (monotonic
    clock) already passed, raise OSError."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise OSError("the audit's time budget ran out before this lookup")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=min(timeout_s, remaining)) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise OSError(f"HTTP {exc.code} from {url}") from exc
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
        raise OSError(f"{url}: {getattr(exc, 'reason', exc)}") from exc


def _current(entries: list[dict]) -> list[Vulnerability]:
    return [_vulnerability(e) for e in entries if not e.get("withdrawn")]


def audit_on_pypi(name: str, version: str, pypi: str, timeout_s: float, deadline: float) -> Result:
    result = Result(name, version)
    try:
        project = _get_json(f"{pypi}/{name}/json", timeout_s, deadline)
        if project is None:
            result.not_auditable = "not on PyPI (404)"
            return result
        newest = str(project.get("info", {}).get("version"))
        files = project.get("releases", {}).get(version)
        if files is None:
            result.not_auditable = f"PyPI has no release {version} (newest: {newest})"
            return result
        if files and all(f.get("yanked") for f in files):
            reason = files[0].get("yanked_reason") or "no reason given"
            result.note = f"release {version} is yanked: {reason}"
        if version == newest:
            result.vulnerabilities = _current(project.get("vulnerabilities") or [])
            return result
        # An older release: its own JSON carries its vulnerabilities, where PyPI serves it.
        release = _get_json(f"{pypi}/{name}/{version}/json", timeout_s, deadline)
        if release is not None and "vulnerabilities" in release:
            result.vulnerabilities = _current(release["vulnerabilities"])
        else:
            result.not_auditable = (
                f"newest is {newest}; PyPI lists only the newest release's vulnerabilities "
                f"and does not serve {version}'s own JSON (404)"
            )
    except OSError as exc:
        result.unreachable = str(exc)
    return result


def audit_with_pip_audit(lock: Path, timeout_s: float) -> list[Result] | None:
    """pip-audit's findings over the lock, or None when it is not installed or its
    service did not answer (then it reports every package as skipped or fails)."""
    try:
        import pip_audit  # noqa: F401
    except ImportError:
        print("pip-audit is not installed: auditing through PyPI's JSON API")
        return None
    command = [
        sys.executable, "-m", "pip_audit", "--requirement", str(lock), "--no-deps",
        "--disable-pip", "--format", "json", "--progress-spinner", "off",
        "--vulnerability-service", "osv", "--timeout", str(int(timeout_s)),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s * 2)
        report = json.loads(done.stdout or "null")
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        print(f"pip-audit gave no report ({type(exc).__name__}): auditing through PyPI's JSON API")
        return None
    if done.returncode not in (0, 1) or not isinstance(report, dict):
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"pip-audit's service did not answer ({reason}): auditing through PyPI's JSON API")
        return None
    results = []
    for dep in report.get("dependencies", []):
        result = Result(canonical(dep["name"]), str(dep.get("version")))
        if dep.get("skip_reason"):
            result.not_auditable = str(dep["skip_reason"])
        result.vulnerabilities = [_vulnerability(v) for v in dep.get("vulns", [])]
        results.append(result)
    if results and all(r.not_auditable for r in results):
        print("pip-audit skipped every package (its service knows none of them): "
              "auditing through PyPI's JSON API")  # fmt: skip
        return None
    return results


# -- exceptions and the verdict -----------------------------------------------------------
def read_exceptions(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("exception", [])
    for entry in entries:
        missing = {"package", "id", "reason"} - set(entry)
        if missing or not str(entry.get("reason", "")).strip():
            raise SystemExit(
                f"{path.name}: every [[exception]] needs package, id and a reason; "
                f"{entry!r} lacks {sorted(missing) or ['a reason']}"
            )
    return entries


def explained(result: Result, vuln: Vulnerability, exceptions: list[dict[str, str]]) -> str | None:
    for entry in exceptions:
        if canonical(entry["package"]) == result.name and entry["id"] in vuln.names():
            return str(entry["reason"]).strip()
    return None


def report(results: list[Result], exceptions: list[dict[str, str]], source: str) -> int:
    unexplained = 0
    vulnerable = [r for r in results if r.vulnerabilities]
    used: set[tuple[str, str]] = set()
    for result in vulnerable:
        for vuln in result.vulnerabilities:
            reason = explained(result, vuln, exceptions)
            fixed = ", ".join(vuln.fixed_in) or "no fixed release"
            line = f"{result.name} {result.version}: {vuln.id} (fixed in {fixed}) {vuln.summary}"
            if reason is None:
                unexplained += 1
                print(f"VULNERABLE  {line}")
            else:
                used |= {(result.name, n) for n in vuln.names()}
                print(f"explained   {line}\n            reason: {reason}")
    for entry in exceptions:
        if (canonical(entry["package"]), entry["id"]) not in used:
            print(f"note: exception {entry['package']} {entry['id']} matches nothing any more")
    for result in results:
        if result.note:
            print(f"note: {result.name} {result.version}: {result.note}")
    partial = [r for r in results if r.not_auditable]
    for result in partial:
        print(f"not fully auditable: {result.name} {result.version}: {result.not_auditable}")
    unreachable = [r for r in results if r.unreachable]
    print(
        f"audited {len(results)} locked packages ({source}): {len(vulnerable)} vulnerable "
        f"({unexplained} unexplained), {len(partial)} not fully auditable, "
        f"{len(unreachable)} not reached"
    )
    if unreachable:
        banner = "!" * 78
        print(
            f"{banner}\nWARNING: THE DEPENDENCY AUDIT IS INCOMPLETE: {len(unreachable)} of "
            f"{len(results)} packages could not be looked up (e.g. {unreachable[0].name}: "
            f"{unreachable[0].unreachable}).\nTheir vulnerabilities are UNKNOWN; this does not "
            f"fail the build. Run `make audit` again when the registry answers.\n{banner}",
            file=sys.stderr,
        )
    if unexplained:
        print(
            f"{unexplained} known vulnerabilities are neither fixed nor explained: raise the "
            "package's floor in pyproject.toml (then `make lock`), or add an [[exception]] "
            "with its reason to audit-exceptions.toml",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--exceptions", type=Path, default=EXCEPTIONS)
    parser.add_argument("--write-lock", action="store_true", help="rewrite the lock and stop")
    parser.add_argument("--pypi", default=PYPI, help="the PyPI JSON API's base URL")
    parser.add_argument("--no-pip-audit", action="store_true", help="PyPI's JSON API only")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument(
        "--budget", type=float, default=45.0,
        help="seconds for all PyPI lookups together (later ones count as not reached)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.write_lock:
        return write_lock(args.lock)
    started = time.monotonic()
    locked = read_lock(args.lock)
    exceptions = read_exceptions(args.exceptions)
    differences = drift(locked)
    if differences:
        print(
            f"WARNING: this environment differs from {args.lock.name} in {len(differences)} "
            "packages (the lock is what is audited; `make lock` rewrites it):\n  "
            + "\n  ".join(differences[:20]),
            file=sys.stderr,
        )
    results = None if args.no_pip_audit else audit_with_pip_audit(args.lock, args.timeout)
    source = "pip-audit"
    if results is None:
        source = "PyPI JSON API"
        deadline = time.monotonic() + args.budget
        with ThreadPoolExecutor(16) as pool:
            results = list(
                pool.map(
                    lambda item: audit_on_pypi(*item, args.pypi, args.timeout, deadline),
                    sorted(locked.items()),
                )
            )
    status = report(results, exceptions, source)
    print(f"dependency audit took {time.monotonic() - started:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
