"""A streamed answer of the compatible APIs that always lets its answer go."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from kynsey.compat.service import Exchange


class ExchangeStream(StreamingResponse):
    """Releases the answer (its model lease and backend stream) however the response ends: a client that
    leaves before the first byte cancels it before its body generator ever starts, so that generator's own
    ``finally`` cannot be relied on."""

    def __init__(self, exchange: Exchange, content: AsyncIterator[bytes], **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.exchange = exchange

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.exchange.aclose()
