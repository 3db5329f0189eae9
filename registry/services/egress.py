"""Where the server may send requests of its own (webhooks): public addresses only, checked after DNS
resolution and again on every redirect, unless the operator names an internal host.

A URL's host is resolved once, every address it resolves to is checked, and the request then goes to
that checked address (the ``Host`` header and TLS name stay the URL's), so a DNS answer that changes
between the check and the connection (rebinding) cannot reach an internal address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from registry.domain.errors import InvalidInput

__all__ = ["EgressPolicy", "Target", "TargetRefused"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ALLOW_HINT = "a public http(s) URL; an operator can allow an internal host with WANLORA_WEBHOOK_ALLOW_HOSTS"


class TargetRefused(InvalidInput):
    code = "target_refused"


@dataclass(frozen=True)
class Target:
    """A checked URL: the address to connect to, and what the request must still say."""

    url: str  # with the checked address in place of the host name
    host_header: str
    sni_hostname: str | None  # for https: the certificate must still name the URL's host


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def _is_public(ip: IPAddress) -> bool:
    inner = _embedded_ipv4(ip)
    if inner is not None and not _is_public(inner):
        return False
    return ip.is_global and not ip.is_multicast


def _numeric(host: str) -> IPAddress | None:
    """The address a host written as a number stands for, in every form the C library accepts
    (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``, ``[::ffff:7f00:1]``); no DNS."""
    try:
        info = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(str(info[0][4][0]).split("%")[0])


@dataclass(frozen=True)
class EgressPolicy:
    """Public targets only; ``allow_hosts`` names host names (exact) or addresses and networks
    (``10.0.0.0/8``) that may be internal."""

    allow_hosts: tuple[str, ...] = ()
    _names: frozenset[str] = field(init=False, repr=False, default=frozenset())
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        names, networks = set(), []
        for entry in self.allow_hosts:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_networks", tuple(networks))

    @classmethod
    def allowing(cls, *hosts: str) -> EgressPolicy:
        return cls(allow_hosts=tuple(hosts))

    def _allowed(self, host: str, ip: IPAddress) -> bool:
        return host.lower().rstrip(".") in self._names or any(ip in net for net in self._networks) or _is_public(ip)

    def _parts(self, url: str) -> tuple[str, str, int, str]:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise TargetRefused(f"invalid URL {url[:200]!r}: {exc}", hint=_ALLOW_HINT) from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetRefused(f"invalid webhook URL {url[:200]!r}", hint="use an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise TargetRefused(
                "a webhook URL may not carry a user name or password",
                hint="put the credential in the receiver's path or check the signature instead",
            )
        return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), parts.netloc

    def check_static(self, url: str) -> None:
        """What can be told without DNS: the scheme, no credentials, and no internal address written
        as a number or as a localhost name. Used when a webhook is added."""
        _, host, _, _ = self._parts(url)
        ip = _numeric(host)
        if ip is not None:
            if not self._allowed(host, ip):
                raise TargetRefused(f"{host} is {ip}, a private, loopback or link-local address", hint=_ALLOW_HINT)
        elif (host == "localhost" or host.endswith(".localhost")) and host not in self._names:
            raise TargetRefused(f"{host} is this machine", hint=_ALLOW_HINT)

    def resolve(self, url: str) -> Target:
        """Resolve the URL's host and check every address it has; refuse when any is internal."""
        scheme, host, port, netloc = self._parts(url)
        addresses = self._addresses(host, port)
        for ip in addresses:
            if not self._allowed(host, ip):
                raise TargetRefused(f"{host} resolves to {ip}, a private, loopback or link-local address",
                                    hint=_ALLOW_HINT)  # fmt: skip
        ip = addresses[0]
        literal = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
        rest = url.split(netloc, 1)[1]
        return Target(
            url=f"{scheme}://{literal}:{port}{rest}",
            host_header=netloc.rsplit("@", 1)[-1],
            sni_hostname=host if scheme == "https" and _numeric(host) is None else None,
        )

    @staticmethod
    def _addresses(host: str, port: int) -> list[IPAddress]:
        try:
            infos: Iterable[tuple] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise TargetRefused(f"{host} does not resolve ({exc})", hint="check the webhook's URL") from exc
        seen: list[IPAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if ip not in seen:
                seen.append(ip)
        if not seen:
            raise TargetRefused(f"{host} has no address", hint="check the webhook's URL")
        return seen
