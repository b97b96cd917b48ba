"""service/answered_errors.py: which errors end at the app and which go on to uvicorn.
(Through a real server: test_e2e_api's failed insert keeps its connection after the 500.)"""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.answered_errors import AnsweredErrorsEndHere

SCOPE: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}


def app_failing_after(messages: list[Message]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in messages:
            await send(message)
        raise RuntimeError("a bug")

    return app


def run(messages: list[Message]) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    asyncio.run(AnsweredErrorsEndHere(app_failing_after(messages))(SCOPE, receive, send))
    return sent


START: Message = {"type": "http.response.start", "status": 500, "headers": []}


def test_an_error_after_the_whole_answer_ends_here() -> None:
    whole = [START, {"type": "http.response.body", "body": b"{}"}]
    assert run(whole) == whole


@pytest.mark.parametrize(
    "messages",
    [[], [START], [START, {"type": "http.response.body", "body": b"{", "more_body": True}]],
    ids=["before the answer", "after its start", "in the middle of its body"],
)
def test_an_error_before_the_answer_is_whole_goes_on(messages: list[Message]) -> None:
    with pytest.raises(RuntimeError, match="a bug"):
        run(messages)
