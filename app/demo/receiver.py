"""The platform's own endpoint for events out, as a platform would run it: a small HTTP server on 127.0.0.1 that
verifies every message's Standard Webhooks signature with the `standardwebhooks` library and counts what came."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.demo.programme import RECEIVER_PATH


class EventReceiver:
    def __init__(self) -> None:
        self.secret: str | None = None
        self.received = 0
        self.verified: Counter[str] = Counter()
        """Verified messages by event type."""
        self.message_ids: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{RECEIVER_PATH}"

    def start(self) -> EventReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, event_type: str) -> int:
        with self._lock:
            return self.verified[event_type]

    @property
    def unverified(self) -> int:
        with self._lock:
            return self.received - sum(self.verified.values())

    def _accept(self, body: bytes, headers: dict[str, str]) -> bool:
        """Verify and count one message; a delivery retried under the same `webhook-id` counts once."""
        verified_type = None
        if self.secret is not None:
            try:
                event = Webhook(self.secret).verify(body.decode("utf-8"), headers)
                verified_type = str(event["type"]) if isinstance(event, dict) else None
            except (WebhookVerificationError, UnicodeDecodeError, ValueError, KeyError):
                verified_type = None
        with self._lock:
            message_id = headers.get("webhook-id", "")
            if message_id in self.message_ids:
                return verified_type is not None
            self.received += 1
            if verified_type is not None:
                self.message_ids.add(message_id)
                self.verified[verified_type] += 1
        return verified_type is not None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = self.path == RECEIVER_PATH and receiver._accept(body, headers)
                answer = json.dumps({"verified": ok}).encode()
                self.send_response(200 if ok else 400)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the demo's screen is its progress and summary

        return Handler
