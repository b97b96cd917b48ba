"""`python -m service.healthcheck`: exit 0 when the API on this host can serve: /readyz
answers 200 (a model and its indexes loaded; a switch to another version may run).

The container health check of the API (docker/Dockerfile, compose.yaml). It asks the
port the server listens on (MMV_PORT) on the loopback address, whatever MMV_HOST binds,
and needs no API key: /readyz is open. /healthz only says the process answers: a server
that found no model (MMV_MODEL wrong) answers it for ever, and was reported healthy.
The slim image has no curl, so it is Python.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 5.0


def check(port: int, timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:  # 503: starting, or no model; its body says which
            why = json.loads(exc.read() or b"{}").get("error", {}).get("message", "")
        except ValueError:
            why = ""
        return False, f"{url} answered {exc.code}" + (f": {why}" if why else "")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url} does not answer ({reason})"
    except ValueError:
        return False, f"{url} answered something that is not JSON"
    if not isinstance(body, dict) or not body.get("model_version"):
        return False, f"{url} answered {body}"
    return True, f"{url}: ready, model {body['model_version']}"


def main() -> int:
    try:
        port = int(os.environ.get("MMV_PORT", "8000"))
    except ValueError:
        print(f"MMV_PORT={os.environ['MMV_PORT']!r} is not a port number", file=sys.stderr)
        return 2
    healthy, why = check(port)
    print(why, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
