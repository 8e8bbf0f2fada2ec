"""A transport the demo can cut: the workstation's link to the server, on a switch.

When cut, every request fails as if the cable were pulled (httpx.ConnectError),
so the workstation goes offline exactly as it would in a real outage.
"""

from __future__ import annotations

import httpx


class SwitchableTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.cut = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.cut:
            raise httpx.ConnectError("network cut (demo switch)", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
