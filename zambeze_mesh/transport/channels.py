"""A pool of reused mTLS gRPC channels to peers, one per address."""

from __future__ import annotations

import asyncio

import grpc


#: Keepalive and size options shared by every agent-to-agent channel.
def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel options: message limits and keepalive pings."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.min_reconnect_backoff_ms", 100),
    ]


class ChannelPool:
    """Opens one secure channel per peer address and reuses it for every call."""

    def __init__(self, credentials: grpc.ChannelCredentials, max_message_bytes: int) -> None:
        self._credentials = credentials
        self._options = channel_options(max_message_bytes)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closed = False

    def get(self, address: str) -> grpc.aio.Channel:
        """The channel to ``address`` (host:port), created on first use."""
        if self._closed:
            raise RuntimeError("channel pool is closed")
        ch = self._channels.get(address)
        if ch is None:
            ch = grpc.aio.secure_channel(address, self._credentials, options=self._options)
            self._channels[address] = ch
        return ch

    async def drop(self, address: str) -> None:
        """Close and forget the channel to ``address`` (e.g. after the peer left)."""
        ch = self._channels.pop(address, None)
        if ch is not None:
            await ch.close()

    async def close(self) -> None:
        """Close every channel."""
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)
