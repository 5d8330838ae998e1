"""The server's HTTP protocol: each response's head and body leave in one write, and the client gets exactly the
bytes plain uvicorn would send it, streamed responses and `100 Continue` included."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.core.http_protocol import OneWriteHttpToolsProtocol


class _Transport:
    """What the protocol writes, one entry a write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def writelines(self, chunks: tuple[bytes, ...]) -> None:  # one send of them all, as uvloop's
        self.write(b"".join(chunks))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/upload":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = b"got %d bytes" % len(body)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(answer))],
            }
        )
        await send({"type": "http.response.body", "body": answer})
        return
    if path == "/nothing":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"status":"applied"}'
    headers = [(b"content-type", b"application/json"), (b"x-frame-options", b"DENY")]
    if path == "/stream":  # no length: chunked, and the body comes a while after the head
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [*headers, (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _protocol(kind: type[HttpToolsProtocol]) -> tuple[HttpToolsProtocol, _Transport]:
    config = Config(
        app=_app, http=kind, lifespan="off", date_header=False, server_header=False, log_config=None
    )
    protocol = kind(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


async def _answered(protocol: HttpToolsProtocol, request: bytes, transport: _Transport) -> list[bytes]:
    protocol.data_received(request)
    for _ in range(200):
        await asyncio.sleep(0.005)
        if protocol.cycle is not None and protocol.cycle.response_complete:
            await asyncio.sleep(0)
            return transport.writes
    raise AssertionError(f"no complete answer to {request!r}: {transport.writes}")


REQUESTS = {
    "an answer with its length": b"POST /webhook HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}",
    "a HEAD": b"HEAD /webhook HTTP/1.1\r\nhost: t\r\n\r\n",
    "a 204": b"DELETE /nothing HTTP/1.1\r\nhost: t\r\n\r\n",
    "a streamed answer": b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n",
    "connection: close": b"GET /webhook HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", REQUESTS.values(), ids=REQUESTS.keys())
async def test_the_client_gets_the_bytes_plain_uvicorn_sends(request_bytes: bytes) -> None:
    ours, ours_sent = _protocol(OneWriteHttpToolsProtocol)
    plain, plain_sent = _protocol(HttpToolsProtocol)
    assert b"".join(await _answered(ours, request_bytes, ours_sent)) == b"".join(
        await _answered(plain, request_bytes, plain_sent)
    )
    assert ours_sent.closed == plain_sent.closed


async def test_an_answer_sent_in_one_go_leaves_in_one_write() -> None:
    ours, sent = _protocol(OneWriteHttpToolsProtocol)
    writes = await _answered(ours, REQUESTS["an answer with its length"], sent)
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 201 Created\r\n") and writes[0].endswith(
        b'\r\n\r\n{"status":"applied"}'
    )
    plain, plain_sent = _protocol(HttpToolsProtocol)
    assert (
        len(await _answered(plain, REQUESTS["an answer with its length"], plain_sent)) == 2
    )  # what it saves


async def test_a_head_without_a_body_is_sent_when_the_response_ends() -> None:
    for request in (REQUESTS["a HEAD"], REQUESTS["a 204"]):
        ours, sent = _protocol(OneWriteHttpToolsProtocol)
        writes = await _answered(ours, request, sent)
        assert len(writes) == 1 and writes[0].endswith(b"\r\n\r\n")


async def test_a_streamed_answer_shows_its_head_before_its_body_is_ready() -> None:
    ours, sent = _protocol(OneWriteHttpToolsProtocol)
    ours.data_received(REQUESTS["a streamed answer"])
    await asyncio.sleep(0.02)  # the app is still waiting to send its body
    assert len(sent.writes) == 1 and sent.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in sent.writes[0] and sent.writes[0].endswith(b"\r\n\r\n")
    await _answered(ours, b"", sent)
    assert b"".join(sent.writes[1:]) == b'14\r\n{"status":"applied"}\r\n0\r\n\r\n'


async def test_100_continue_is_sent_at_once_so_the_client_sends_its_body() -> None:
    ours, sent = _protocol(OneWriteHttpToolsProtocol)
    ours.data_received(
        b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n"
    )
    await asyncio.sleep(0.02)
    assert sent.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # not held: the client waits for it
    writes = await _answered(ours, b"hello", sent)
    assert (
        len(writes) == 2
        and writes[1].startswith(b"HTTP/1.1 200 OK\r\n")
        and writes[1].endswith(b"got 5 bytes")
    )
    # Written in the same turn of the loop, where a final answer's head waits for its body:
    ours, sent = _protocol(OneWriteHttpToolsProtocol)
    ours.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    ours.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    assert sent.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
