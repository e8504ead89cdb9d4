"""Zeroconf (mDNS / DNS-SD) discovery of agents on the same LAN: ``_zmesh._tcp.local.``.

Every agent advertises one service instance on its listening interface only, with TXT
properties ``name``, ``mesh``, ``address`` (its advertised mTLS address), ``admission``
(its admission address) and ``ca`` (the sha256 of the mesh CA certificate, the digest a
join token pins). ``zmesh join --discover`` browses for them and picks a seed; the token's
CA digest selects the instances of the right mesh, and the join itself still pins the CA,
so a spoofed advertisement can at worst make a join fail, never join the wrong mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from zambeze_mesh.errors import InvalidInput, NotFound

log = logging.getLogger("zambeze_mesh.discovery")

SERVICE_TYPE = "_zmesh._tcp.local."
_WILDCARDS = ("", "0.0.0.0", "::", "*")


@dataclass(frozen=True)
class Advertisement:
    """One agent as it advertises itself over zeroconf."""

    name: str
    mesh: str
    address: str
    admission_address: str
    ca_digest: str = ""

    def properties(self) -> dict[str, str]:
        """The TXT properties of this advertisement."""
        return {
            "name": self.name,
            "mesh": self.mesh,
            "address": self.address,
            "admission": self.admission_address,
            "ca": self.ca_digest,
        }

    @classmethod
    def from_properties(cls, props: dict[bytes, bytes | None]) -> Advertisement | None:
        """Parse TXT properties; None when a required one is missing."""

        def get(key: str) -> str:
            value = props.get(key.encode())
            return value.decode("utf-8", "replace") if value else ""

        ad = cls(get("name"), get("mesh"), get("address"), get("admission"), get("ca"))
        if not (ad.name and ad.address and ad.admission_address):
            return None
        return ad


def _host(address: str) -> str:
    host, sep, _ = address.rpartition(":")
    if not sep:
        raise InvalidInput(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]")


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def interface_for(listen: str, advertise: str = "") -> str | None:
    """The interface address to advertise on: the listener's IP, None for a wildcard.

    A wildcard listener (``0.0.0.0``) falls back to the advertised host when that is an
    IP address, and to every interface (None) otherwise.
    """
    for candidate in (listen, advertise):
        if not candidate:
            continue
        host = _host(candidate)
        if host in _WILDCARDS:
            continue
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            continue
    return None


def _interfaces(interface: str | None) -> Any:
    from zeroconf import InterfaceChoice, IPVersion

    if interface is None:
        return InterfaceChoice.All, IPVersion.V4Only
    ip = ipaddress.ip_address(interface)
    return [str(ip)], (IPVersion.V6Only if ip.version == 6 else IPVersion.V4Only)


def _instance(ad: Advertisement) -> str:
    return f"{ad.mesh}-{ad.name}.{SERVICE_TYPE}"


def _service_info(ad: Advertisement) -> Any:
    from zeroconf import ServiceInfo

    host = _host(ad.address)
    try:
        addresses = [ipaddress.ip_address(host).packed]
        server = f"{ad.mesh}-{ad.name}.local."
    except ValueError:  # a DNS name: advertise it as the target host
        addresses = []
        server = host.rstrip(".") + "."
    return ServiceInfo(
        SERVICE_TYPE,
        _instance(ad),
        port=_port(ad.address),
        properties=ad.properties(),
        server=server,
        addresses=addresses,
    )


class Advertiser:
    """Advertises one agent on one interface while it runs (asyncio side).

    :meth:`start` returns at once; mDNS probing (about a second) and the announcements
    run in the background so that advertising never delays the agent.
    """

    def __init__(self, ad: Advertisement, interface: str | None) -> None:
        self.ad = ad
        self.interface = interface
        self.registered = False
        self._zc: Any = None
        self._info: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the mDNS sockets and register the service in the background."""
        from zeroconf.asyncio import AsyncZeroconf

        interfaces, version = _interfaces(self.interface)
        self._info = _service_info(self.ad)
        self._zc = AsyncZeroconf(interfaces=interfaces, ip_version=version)
        self._task = asyncio.create_task(self._register())

    async def _register(self) -> None:
        try:
            announced = await self._zc.async_register_service(self._info, allow_name_change=True)
            await announced
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # advertising is best effort: say why and carry on
            log.warning("zeroconf.failed", extra={"fields": {"reason": str(exc)}})
            return
        self.registered = True
        log.info("zeroconf.advertised", extra={"fields": {"interface": self.interface or "all"}})

    async def close(self) -> None:
        """Stop advertising (a goodbye when registered) and release the sockets."""
        zc, self._zc = self._zc, None
        if zc is None:
            return
        task, self._task = self._task, None
        try:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.registered:
                self.registered = False
                await zc.async_unregister_service(self._info)  # goodbye sent in the background
        finally:
            await zc.async_close()


def browse(
    timeout: float = 3.0,
    interface: str | None = None,
    *,
    ca_digest: str = "",
    mesh: str = "",
    first: bool = False,
) -> list[Advertisement]:
    """Advertisements seen within ``timeout`` s (filtered by CA digest and mesh if given).

    With ``first``, return as soon as one matching advertisement is resolved.
    """
    from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

    if timeout <= 0:
        raise InvalidInput("discovery timeout must be positive")
    interfaces, version = _interfaces(interface)
    found: dict[str, Advertisement] = {}
    names: list[str] = []
    seen = threading.Event()

    class _Listener(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            names.append(name)
            seen.set()

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            names.append(name)
            seen.set()

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            found.pop(name, None)

    def matches(ad: Advertisement) -> bool:
        return (not ca_digest or ad.ca_digest == ca_digest) and (not mesh or ad.mesh == mesh)

    zc = Zeroconf(interfaces=interfaces, ip_version=version)
    browser = ServiceBrowser(zc, SERVICE_TYPE, _Listener())
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            seen.wait(min(left, 0.1))
            seen.clear()
            while names:
                name = names.pop(0)
                wait_ms = max(100, int(1000 * min(1.0, deadline - time.monotonic())))
                info = zc.get_service_info(SERVICE_TYPE, name, timeout=wait_ms)
                ad = Advertisement.from_properties(info.properties) if info else None
                if ad is not None and matches(ad):
                    found[name] = ad
            if first and found:
                break
    finally:
        browser.cancel()
        zc.close()
    return sorted(found.values(), key=lambda a: (a.mesh, a.name))


def discover_seed(
    timeout: float = 5.0,
    interface: str | None = None,
    *,
    ca_digest: str = "",
    mesh: str = "",
) -> tuple[str, str]:
    """Find one agent to join through: ``(seed_address, admission_address)``.

    ``interface`` is the address of the interface to browse on (all when None);
    ``ca_digest`` (from the join token) keeps only agents of that mesh.
    Raises :class:`NotFound` when nothing answers within ``timeout`` seconds.
    """
    if interface is not None:
        try:
            interface = str(ipaddress.ip_address(interface))
        except ValueError:
            interface = _resolve(interface)
    ads = browse(timeout, interface, ca_digest=ca_digest, mesh=mesh, first=True)
    if not ads:
        where = f" on {interface}" if interface else ""
        raise NotFound(f"no zmesh agent of this mesh answered zeroconf{where} within {timeout:g} s")
    ad = ads[0]
    return ad.address, ad.admission_address


def _resolve(name: str) -> str:
    try:
        return socket.gethostbyname(name)
    except OSError:
        raise InvalidInput(f"--interface {name!r} is neither an IP address nor a host") from None
