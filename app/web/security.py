"""Security headers on every response, and the pages' Content-Security-Policy.

Pages run no inline script or style: scripts and styles come from `/static` only, charts are SVG drawn on the
server. The billing page alone adds Stripe.js's origin (see `csp(stripe_origin=…)`); the API reference (`/docs`,
Swagger UI served from `/static/vendor`) alone adds `data:` images, the icons its stylesheet carries inline."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BASE_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "frame-src": ["'none'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@lru_cache(maxsize=32)  # a handful of combinations, each the same string every time
def csp(*, stripe_js_url: str | None = None, data_images: bool = False, blob_images: bool = False) -> str:
    """The policy for a page. With `stripe_js_url`, Stripe.js may load from its origin, open its frames and
    call its API (the real Stripe's, or a stand-in's such as localstripe, whose script calls its own origin).
    With `data_images`, images may also be `data:` URLs; with `blob_images`, `blob:` URLs (the field app shows
    the photo it is about to send from the device's own memory)."""
    policy = {name: list(sources) for name, sources in _BASE_POLICY.items()}
    if data_images:
        policy["img-src"].append("data:")
    if blob_images:
        policy["img-src"].append("blob:")
    if stripe_js_url is not None:
        origin = origin_of(stripe_js_url)
        policy["script-src"].append(origin)
        policy["frame-src"] = [origin, "https://hooks.stripe.com"]
        policy["connect-src"].append(origin)
        if origin == "https://js.stripe.com":
            policy["connect-src"].append("https://api.stripe.com")
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in policy.items())


DEFAULT_CSP = csp()


class SecurityHeaders:
    """Adds the usual security headers to every response, and the default CSP to any that set none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._always = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=(self)"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in self._always if n not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", DEFAULT_CSP.encode()))
                if https:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
