"""`python -m service`: the API server with settings from MMV_* environment variables."""

from __future__ import annotations

import math
import os

# Before torch or faiss load anywhere: one OpenMP thread per process. Pool threads do
# not see a later torch.set_num_threads, and 2 cores oversubscribed halve throughput.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys

from pydantic import ValidationError

from service.settings import Settings, SettingsError


def main() -> int:
    try:
        settings = Settings()
        settings.check()
    except (SettingsError, ValidationError) as exc:
        print(f"mmv-search cannot start: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from service.http_protocol import protocol_class
    from service.logs import setup_logging
    from service.main import create_app

    # The event loop and the search thread share the GIL. At the default 5 ms switch
    # interval a search batch that hands the GIL back (each torch op, the FAISS call) can
    # wait 5 ms to get it again while the loop parses requests; 1 ms bounds that wait
    # (measured: ~1.3-2x search throughput under load, see docs/service.md).
    sys.setswitchinterval(0.001)
    setup_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools with bounded request heads, parse errors in the contract's shape and
        # early answers (413, 503, 507) that reach a client still sending its body.
        http=protocol_class(),
        lifespan="on",
        log_config=None,  # setup_logging routes uvicorn's loggers
        access_log=False,  # ours carries the request id
        # Whole seconds, rounded up: 0.5 s made 0, which cancels uploads in flight at once.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )
    server = uvicorn.Server(config)
    # A start-up that fails in the background (service/runtime.py) stops the server.
    app.state.stop_server = lambda: setattr(server, "should_exit", True)
    server.run()
    runtime = getattr(app.state, "runtime", None)
    failed = runtime is not None and runtime.failed is not None  # start-up gave up
    return 0 if server.started and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
