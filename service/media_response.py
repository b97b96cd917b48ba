"""A stored media file answered from a descriptor opened before the answer starts.

Starlette's FileResponse opens its path only once the answer is under way (after the
status line, for a Range), so a delete of the item that removes the file in between
made a download fail: a 500 when the file was gone by the time of its `stat`, a cut
answer when it went after (found by the load test, tests/e2e/test_reliability_load.py).
A file opened first stays readable after it is unlinked, so the download that found
the item gets its bytes whole; one that comes after the delete finds no item (404).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, BinaryIO

import anyio
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send


class OpenedFileResponse(FileResponse):
    """FileResponse (Range, HEAD, ETag) over `file`, already open; closes it when done."""

    def __init__(self, file: BinaryIO, **kwargs: Any) -> None:
        self.file = file
        super().__init__(file.name, stat_result=os.fstat(file.fileno()), **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # "Send this path" would make the server open the path itself: not offered.
        extensions = {k: v for k, v in scope.get("extensions", {}).items()
                      if k != "http.response.pathsend"}  # fmt: skip
        try:
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            self.file.close()

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        """FileResponse's one way to the bytes: the open file, from its start."""
        self.file.seek(0)
        yield anyio.wrap_file(self.file)
