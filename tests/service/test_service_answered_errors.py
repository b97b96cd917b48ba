"""service/answered_errors.py: which errors end at the app and which go on to uvicorn.
(Through a real server: test_e2e_api's failed insert keeps its connection after the 500.)"""

from __future__ import annotations

import asyncio
import logging

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.answered_errors import AnsweredErrorsEndHere
from service.errors import LOGGED_NOTE

SCOPE: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}


def app_failing_after(messages: list[Message], logged: bool) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in messages:
            await send(message)
        bug = RuntimeError("a bug")
        if logged:  # as the app's handler for unexpected errors marks what it logged
            bug.add_note(LOGGED_NOTE)
        raise bug

    return app


def run(messages: list[Message], logged: bool = True) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    asyncio.run(AnsweredErrorsEndHere(app_failing_after(messages, logged))(SCOPE, receive, send))
    return sent


START: Message = {"type": "http.response.start", "status": 500, "headers": []}


def test_an_error_after_the_whole_answer_ends_here_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    whole = [START, {"type": "http.response.body", "body": b"{}"}]
    with caplog.at_level(logging.DEBUG, logger="service.errors"):
        assert run(whole) == whole
        assert not caplog.records  # its handler logged it
        assert run(whole, logged=False) == whole
    assert [r.getMessage() for r in caplog.records] == ["error after the answer to GET /"]
    assert caplog.records[0].exc_info is not None


@pytest.mark.parametrize(
    "messages",
    [[], [START], [START, {"type": "http.response.body", "body": b"{", "more_body": True}]],
    ids=["before the answer", "after its start", "in the middle of its body"],
)
def test_an_error_before_the_answer_is_whole_goes_on(messages: list[Message]) -> None:
    with pytest.raises(RuntimeError, match="a bug"):
        run(messages)
