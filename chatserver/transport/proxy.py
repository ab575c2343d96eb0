"""Who is on the other end when a reverse proxy terminates TLS in front (issue 15).

Behind nginx every connection comes from nginx, over plain HTTP: without this, each
per-address budget (``throttle.client_address``) would be one budget for everybody, and a
browser's ``Origin: https://chat.example.org`` would never equal ``http://{Host}``.

``X-Forwarded-For``, ``-Proto`` and ``-Host`` are believed only when the TCP peer is one
of ``server.trusted_proxies``: anyone can send those headers, only our proxy's word
counts. Parsing them is aiohttp-remotes' (aio-libs) ``XForwardedFiltered``: it walks
``X-Forwarded-For`` from the right, skips the hops that are trusted proxies and takes
the first one that is not (a client-written prefix is never reached), and rejects a
malformed or repeated header with 400. It does not look at the TCP peer itself, so it
runs only for requests that come from a trusted one. The RFC 7239 ``Forwarded`` header
is not read: nginx writes the ``X-Forwarded-*`` family.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp_remotes import XForwardedFiltered

__all__ = ["Network", "forwarded_middleware", "trusted_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """``server.trusted_proxies`` as networks (an address is a /32 or /128).

    Raises:
        ValueError: a value that is not an address or network (config.py refuses it at
            start-up, naming the key).
    """
    return tuple(ipaddress.ip_network(v) for v in values)


def _peer_trusted(request: web.Request, networks: Sequence[Network]) -> bool:
    """The TCP peer itself (never a header) is one of the trusted proxies."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not isinstance(peer, tuple) or not peer:
        return False  # a Unix socket or a closed transport: nobody to vouch for
    try:
        ip = ipaddress.ip_address(peer[0])
    except ValueError:
        return False
    # A dual-stack listener sees an IPv4 proxy as ::ffff:a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def forwarded_middleware(trusted: Sequence[str]) -> Middleware | None:
    """The middleware that resolves ``request.remote``, ``.scheme`` (so ``.secure``) and
    ``.host`` from a trusted proxy's headers; ``None`` when nobody is trusted (the
    default: the headers mean nothing and are left alone).

    Put it first among the middlewares: every handler after it, the Origin check and
    every per-address budget included, then sees the client as the proxy saw it.
    """
    networks = trusted_networks(trusted)
    if not networks:
        return None
    resolve = XForwardedFiltered(networks)

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _peer_trusted(request, networks):
            return await handler(request)  # a direct client: its headers are ignored
        return await resolve.middleware(request, handler)

    return forwarded
