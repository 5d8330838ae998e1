"""uvicorn's httptools protocol, sending each response's head and body in one write.

uvicorn writes a response's status line and headers as soon as the application starts the response, and its body
in a second write: two `send()` calls and two TCP segments for every answer, each waking the client. Here the
connection's transport holds the head back until the body's first write (a response sent in one go, as nearly all
of ours are, leaves in one segment), until the response completes without a body (HEAD, 204), until the connection
closes, or at the latest until the event loop's next turn, so a streamed response whose body is slow to come still
shows its head at once. Interim `1xx` answers (`100 Continue`) are never held: the client waits for them before it
sends the body. What reaches the client is byte for byte what plain uvicorn sends (`tests/core/test_http_protocol.py`).

`bench/http_writes.py` measures it alone: answering at once, +10 % requests a second for 10 % less CPU a request;
answering after 5 ms, as an order webhook waiting for its batch does, 8–9 µs less a request (~2 % of what an order
webhook costs the service, below what `bench/ingest_ab.py` can resolve; docs/scaling.md)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "  # every response head uvicorn writes starts with its status line
_INTERIM = b"HTTP/1.1 1"


class _HeadHeld:
    """A transport that holds a response head until the next write, the response's end or the loop's next turn;
    everything else passes through to the connection's own transport."""

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.writelines((head, data))  # one send, the body not copied (uvloop writes a vector)
        elif data[: len(_HEAD)] == _HEAD and data[: len(_INTERIM)] != _INTERIM:
            self._head = bytes(data)
            self._loop.call_soon(self.flush)  # the body is not always written in the same turn
        else:
            self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # pause_reading, is_closing, get_extra_info, set_protocol, …
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """`uvicorn.run(..., http=OneWriteHttpToolsProtocol)`: uvicorn's httptools protocol on a `_HeadHeld`
    transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHeld(transport, self.loop))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]  # a response without a body (HEAD, 204)
        super().on_response_complete()
