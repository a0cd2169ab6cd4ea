"""``GET /dashboard``: one self-contained page that polls ``/v1/status`` with the reader's key.

The page itself holds no data, so it is served without a key; it asks for one (or takes it from
the URL fragment, which browsers never send) and keeps it in the tab's sessionStorage. Its
Content-Security-Policy allows exactly its own inline script and style, and requests to this
edge only.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from aiohttp import web

PAGE = "dashboard.html"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


class Page:
    def __init__(self, html: str) -> None:
        self.body = html.encode()
        hashes: dict[str, list[str]] = {"script": [], "style": []}
        for kind, text in _INLINE.findall(html):
            digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
            hashes[kind].append(f"'sha256-{digest}'")
        self.csp = "; ".join(
            [
                "default-src 'none'",
                f"script-src {' '.join(hashes['script'])}",
                # The progress bars' widths are set from the script (CSSOM), not in markup.
                f"style-src {' '.join(hashes['style'])}",
                "connect-src 'self'",
                "img-src 'self' data:",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            ]
        )


@cache
def page() -> Page:
    html = resources.files("ingest").joinpath("static", PAGE).read_text(encoding="utf-8")
    return Page(html)


def html_response(found: Page) -> web.Response:
    """A self-contained page with the headers that keep it so."""
    return web.Response(
        body=found.body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": found.csp,
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )
