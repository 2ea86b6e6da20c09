"""Scrape product records from public store pages, through a fetcher that is safe to point at
any URL a user (or a page) hands us.

Two halves:

* **Safe fetch** (:func:`fetch`, :func:`fetch_async`, :class:`FetchPolicy`). A URL is untrusted:
  it may name ``file://``, a cloud metadata endpoint (``169.254.169.254``), an intranet host, a
  hostname whose DNS answer is private, or a server that redirects to any of those, sends 10 GB or
  drips one byte a second. The fetcher allows only http(s); resolves the host itself and refuses
  if *any* address is not public (unless allow-listed); connects to the address it vetted (the IP
  goes in the URL, the name in ``Host`` and in TLS SNI, so DNS cannot change between check and
  connect); follows redirects by hand and vets every hop; caps the body by its declared length and
  while streaming; caps the whole fetch by wall-clock time; checks the content type; and spaces
  requests to one host. Every refusal is a :class:`FetchRefused` with a stable ``reason``.
* **Extraction** (:func:`scrape`, :class:`ScrapedProduct`). Shopify's public JSON endpoints first,
  then schema.org ``Product`` JSON-LD, then OpenGraph, then plain HTML. Page text is data: it is
  kept verbatim (truncated, control characters dropped) and never interpreted, so a description
  that says "set category to jewelry" is just a description.

:func:`download_images` and :func:`import_products` put scraped products into a dataset folder
(:mod:`pixellab.datasets`), every image validated by :func:`pixellab.validate.decode_image`.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import csv
import dataclasses
import functools
import hashlib
import html
import io
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import httpx

from pixellab.blocking import run_blocking
from pixellab.errors import ConfigError, InvalidImage, PixellabError
from pixellab.redact import redact
from pixellab.validate import decode_image

__all__ = [
    "MANIFEST_COLUMNS",
    "relabel",
    "FetchKind",
    "FetchPolicy",
    "FetchRefused",
    "Fetched",
    "HostGate",
    "Resolver",
    "ScrapedProduct",
    "download_images",
    "fetch",
    "fetch_async",
    "html_to_text",
    "import_products",
    "products_from_html",
    "products_from_shopify",
    "scrape",
    "system_resolver",
]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024

FetchKind = Literal["html", "json", "image"]
"""What a fetch expects; it decides the accepted content types and the size cap."""

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> IP address strings``: the DNS boundary, replaceable in tests and intranets."""

_T = TypeVar("_T")


# --- errors ----------------------------------------------------------------------------------

_RETRYABLE_REASONS = frozenset({"dns", "too_slow", "connection"})


class FetchRefused(PixellabError):
    """A fetch was refused or failed; nothing from it should be used.

    ``reason`` is a stable code: ``scheme``, ``private_address``, ``dns``, ``too_large``,
    ``too_slow``, ``too_many_redirects``, ``content_type``, ``http_status`` or ``connection``.
    ``url`` is the URL of the hop that was refused (a redirect target, when it was one), with
    credentials removed and token-like query values redacted. ``status`` is the HTTP status for
    ``http_status``. :attr:`retryable` says whether trying the same URL later can help.
    """

    def __init__(self, reason: str, url: str, detail: str, *, status: int | None = None) -> None:
        self.reason = reason
        self.url = _display_url(url)
        self.detail = " ".join(detail.split())  # one line, whatever a library put in it
        self.status = status
        super().__init__(f"{self.url}: refused: {self.detail}")

    @property
    def retryable(self) -> bool:
        """True for transient causes (DNS, time, connection, 429 and 5xx); False for refusals
        that the same request will meet again (scheme, private address, size, type, 4xx)."""
        if self.reason == "http_status":
            return self.status is not None and (self.status == 429 or self.status >= 500)
        return self.reason in _RETRYABLE_REASONS


def _display_url(url: str) -> str:
    """The URL as messages show it: no userinfo, token-like query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url) or url
    if parts.username is not None or parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[-1]
        url = parts._replace(netloc=netloc).geturl()
    return redact(url) or url


# --- policy ----------------------------------------------------------------------------------


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (IPv4 and IPv6), in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class HostGate:
    """Polite spacing: request starts to one host are at least ``interval`` seconds apart, and a
    request starts at least ``interval`` after the previous one to that host ended.

    Slots are reserved under a lock, so concurrent fetches (threads or tasks) queue up instead of
    bursting; the wait itself happens outside the lock. Counting from the end of a request as well
    makes the spacing hold as the server sees it, whatever the connection set-up time. Shared by
    every fetch under one :class:`FetchPolicy`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_start: dict[str, float] = {}

    def reserve(self, host: str, interval: float) -> float:
        """Reserve the next slot for ``host``; returns how many seconds to wait before it."""
        if interval <= 0:
            return 0.0
        with self._lock:
            now = time.monotonic()
            if len(self._next_start) > 4096:
                self._next_start = {h: t for h, t in self._next_start.items() if t > now}
            start = max(now, self._next_start.get(host, now))
            self._next_start[host] = start + interval
            return start - now

    def finished(self, host: str, interval: float) -> None:
        """Record that a request to ``host`` just ended: the next may start ``interval`` later."""
        if interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._next_start[host] = max(self._next_start.get(host, now), now + interval)


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetch may do. The defaults are for URLs from strangers; loosen them explicitly.

    * ``allow_private``: let loopback, RFC 1918, carrier-grade NAT (100.64/10) and IPv6 ULA
      addresses through (an intranet tool). Link-local (cloud metadata), multicast, reserved and
      unspecified addresses stay refused unless listed in ``allow``.
    * ``allow``: hosts exempt from the address refusal, any iterable of strings: a hostname, an
      IP address or a CIDR network, each with an optional port (``"shop.internal"``,
      ``"127.0.0.1:8080"``, ``"10.1.0.0/16"``, ``"10.1.0.0/16:443"``, ``"[::1]:8080"``,
      ``"[fd00::/8]:8080"``). An entry with a port exempts that port only, at every hop; one
      without exempts every port. An IPv6 address or network with a port goes in brackets.
    * ``max_bytes`` / ``max_image_bytes``: body caps for html/json and for images.
    * ``timeout_s``: wall-clock cap for the whole fetch (DNS, connect, every redirect hop and the
      whole body), so a server dripping one byte at a time is cut off, not waited on per read.
      Time spent waiting for ``rate_per_host_s`` is not counted.
    * ``max_redirects``: redirects followed (each hop vetted like the first URL).
    * ``rate_per_host_s``: minimum seconds between two request starts to the same host.
    * ``resolver``: the DNS boundary, ``(host, port) -> [ip, ...]``.
    * ``ca_file``: PEM bundle to verify https with instead of certifi's (a test CA, a proxy CA).
    """

    allow_private: bool = False
    allow: Iterable[str] = frozenset()
    max_bytes: int = 10 * _MIB
    max_image_bytes: int = 25 * _MIB
    timeout_s: float = 20.0
    max_redirects: int = 5
    rate_per_host_s: float = 1.0
    resolver: Resolver = system_resolver
    ca_file: str | None = None
    user_agent: str = "pixellab/0.1 (product-intelligence)"
    gate: HostGate = field(default_factory=HostGate, compare=False, repr=False)
    _allowed: tuple[_AllowEntry, ...] = field(default=(), init=False, compare=False,
                                              repr=False)

    def __post_init__(self) -> None:
        entries = frozenset([self.allow] if isinstance(self.allow, str) else self.allow)
        allowed = sorted({_parse_allow_entry(entry) for entry in entries}, key=str)
        object.__setattr__(self, "allow", entries)
        object.__setattr__(self, "_allowed", tuple(allowed))
        for name in ("max_bytes", "max_image_bytes", "timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError("must be positive", key=name)
        for name in ("max_redirects", "rate_per_host_s"):
            if getattr(self, name) < 0:
                raise ConfigError("must not be negative", key=name)

    def exempts(self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                port: int | None = None) -> bool:
        """Whether ``allow`` names this host, or a network containing this address, on ``port``
        (``None``: only an entry for every port counts)."""
        return any(entry.port in (None, port) for entry in self._naming(host, address))

    def _naming(self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address
                ) -> list[_AllowEntry]:
        """The ``allow`` entries that name this host or address, whatever their port."""
        return [entry for entry in self._allowed if entry.names(host, address)]


@dataclass(frozen=True)
class _AllowEntry:
    """One parsed ``allow`` entry: a hostname or a network, on one port or (``None``) all."""

    host: str | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None

    def names(self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether this entry is about ``host`` or ``address`` (or the IPv4 address inside it:
        an allowed ``127.0.0.1`` covers ``::ffff:127.0.0.1``), ignoring the port."""
        if self.host is not None:
            return host.lower().rstrip(".") == self.host
        network = self.network
        assert network is not None
        embedded = _embedded_ipv4(address)
        return any(a.version == network.version and a in network
                   for a in (address, embedded) if a is not None)

    def __str__(self) -> str:
        """The entry as messages show it, e.g. ``127.0.0.1:8080``, ``[::1]:8080``."""
        if self.network is None:
            where = str(self.host)
        elif self.network.num_addresses == 1:
            where = str(self.network.network_address)
        else:
            where = str(self.network)
        return _host_port(where, self.port)


def _host_port(host: str, port: int | None) -> str:
    """``host:port`` as a URL writes it (an IPv6 host in brackets); ``host`` when no port."""
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_HOSTNAME = re.compile(r"[A-Za-z0-9.\-]+")
_PORT = re.compile(r"[0-9]{1,5}")
_TRAILING_PORT = re.compile(r"(?P<head>.*):(?P<port>[0-9]{1,5})")


def _ip_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _parse_allow_entry(raw: object) -> _AllowEntry:
    """``HOST``, ``HOST:PORT``, ``IP``, ``IP:PORT``, ``CIDR``, ``CIDR:PORT``, ``[IPv6]``,
    ``[IPv6]:PORT``, ``[IPv6 CIDR]`` or ``[IPv6 CIDR]:PORT``; else :class:`ConfigError`.

    IPv6 text takes its port after brackets, as URLs do: ``::1:8080`` is a valid address
    (``::1:1f90``) as well as what someone writing "port 8080 of ::1" may mean, so a bare IPv6
    entry whose last group could be a port is refused as ambiguous rather than guessed at.
    """
    text = str(raw).strip()

    def malformed(rule: str) -> ConfigError:
        return ConfigError(f"{text!r}: {rule}", key="allow")

    def port_of(digits: str) -> int:
        if _PORT.fullmatch(digits) and 1 <= int(digits) <= 65535:
            return int(digits)
        raise malformed("port must be a number from 1 to 65535")

    if "://" in text:
        raise malformed("a host, not a URL: HOST or HOST:PORT")
    brackets = "an IPv6 address or network with a port goes in brackets, as [::1]:8080"
    if text.startswith("["):
        inside, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise malformed(f"{brackets} or [::1]")
        network = _ip_network(inside)
        if network is None:
            raise malformed("brackets hold an IP address or network")
        return _AllowEntry(None, network, port_of(rest[1:]) if rest else None)
    network = _ip_network(text)
    trailing = _TRAILING_PORT.fullmatch(text)
    if network is not None:
        if (network.version == 6 and trailing is not None and ":" in trailing["head"]
                and _ip_network(trailing["head"]) is not None):
            raise malformed(f"ambiguous: write [{trailing['head']}]:{trailing['port']} for "
                            f"that port, or [{text}] for the address on every port")
        return _AllowEntry(None, network, None)
    host, colon, digits = text.rpartition(":") if ":" in text else (text, "", "")
    if ":" in host:
        raise malformed(brackets)
    port = port_of(digits) if colon else None
    network = _ip_network(host)
    if network is not None:
        return _AllowEntry(None, network, port)
    if not _HOSTNAME.fullmatch(host):
        raise malformed("not a hostname, IP address or CIDR network (HOST[:PORT])")
    return _AllowEntry(host.lower().rstrip("."), None, port)


# --- address vetting -------------------------------------------------------------------------

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_PRIVATE_KINDS = frozenset({"loopback", "private", "carrier-grade NAT"})


def _embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address
                   ) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _address_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not public (``"loopback"``, ``"link-local"``…), or None if it is."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        kind = _address_kind(embedded)
        if kind is not None:
            return kind
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "carrier-grade NAT"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global and embedded is None:
        return "non-public"
    return None


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _vet_addresses(target: _Target, addresses: Sequence[str], policy: FetchPolicy) -> list[str]:
    """The addresses, if every one may be contacted; else refuse naming the first bad one.

    All addresses are checked, not just the one we will use: a name that resolves to a public
    and a private address is a rebinding set-up, and the OS could pick either.
    """
    vetted: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise FetchRefused("dns", target.url_text,
                               f"{target.host} resolved to {text!r}, not an IP address") from None
        kind = _address_kind(address)
        allowed = (kind is None or policy.exempts(target.host, address, target.port)
                   or (policy.allow_private and kind in _PRIVATE_KINDS))
        if not allowed:
            assert kind is not None
            where = (f"{_host_port(str(address), target.port)} is" if target.is_ip_literal
                     else f"{_host_port(target.host, target.port)} resolves to {address},")
            other_ports = ", ".join(map(str, policy._naming(target.host, address)))
            only = f"; allow names {other_ports} only" if other_ports else ""
            raise FetchRefused("private_address", target.url_text,
                               f"{where} {_article(kind)} {kind} address{only}")
        vetted.append(str(address))
    return vetted


# --- fetching --------------------------------------------------------------------------------

_ACCEPT: dict[str, str] = {
    "html": "text/html,application/xhtml+xml;q=0.9",
    "json": "application/json",
    "image": "image/png,image/jpeg,image/webp;q=0.9,image/*;q=0.5",
}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Object stores and CDNs often label any file as octet-stream; the bytes of every image are
# validated by decode_image anyway, which only opens PNG, JPEG and WEBP.
_GENERIC_BINARY = frozenset({"application/octet-stream", "binary/octet-stream"})


def _content_type_ok(kind: str, media_type: str) -> bool:
    if kind == "html":
        return media_type in ("text/html", "application/xhtml+xml")
    if kind == "json":
        return media_type in ("application/json", "text/json") or (
            media_type.startswith("application/") and media_type.endswith("+json"))
    return (media_type.startswith("image/") and media_type != "image/svg+xml") or (
        media_type in _GENERIC_BINARY)


_ESCAPE_CODECS = frozenset({"unicode-escape", "raw-unicode-escape"})


@dataclass(frozen=True)
class Fetched:
    """A response that passed every check. ``redirects`` lists each hop after ``url``."""

    url: str
    final_url: str
    status: int
    content_type: str
    body: bytes
    redirects: list[str] = field(default_factory=list)
    charset: str | None = None

    def text(self) -> str:
        """The body decoded with the declared charset (``<meta charset>`` for html), else UTF-8;
        undecodable bytes become U+FFFD rather than failing. A charset Python cannot decode a
        page with (unknown, ``rot13``, ``idna``, a name holding a NUL) or that reads backslash
        escapes (``unicode_escape``, which no browser knows) is ignored, as browsers ignore an
        unknown one."""
        charset = self.charset
        if charset is None and self.content_type in ("text/html", "application/xhtml+xml"):
            match = re.search(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_\-]+)""",
                              self.body[:4096], re.IGNORECASE)
            charset = match.group(1).decode("ascii") if match else None
        try:
            if charset and codecs.lookup(charset).name not in _ESCAPE_CODECS:
                return self.body.decode(charset, errors="replace")
        except (LookupError, ValueError):  # idna, punycode: UnicodeError; a NUL: ValueError
            pass
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` on bad JSON)."""
        return json.loads(self.body)


@dataclass(frozen=True)
class _Target:
    """One hop's URL, split into what the checks and the pinned connection need."""

    url: httpx.URL
    url_text: str
    host: str
    port: int
    is_ip_literal: bool

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.url.port is None else f"{host}:{self.url.port}"


def _parse_target(url: str) -> _Target:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchRefused("scheme", url, "not a valid http(s) URL") from None
    if parsed.scheme not in ("http", "https"):
        scheme = parsed.scheme or "no scheme"
        raise FetchRefused("scheme", url, f"scheme {scheme!r} is not allowed (only http, https)")
    try:
        host = parsed.raw_host.decode("ascii").lower()
    except UnicodeDecodeError:
        raise FetchRefused("scheme", url, "host name is not valid") from None
    if not host:
        raise FetchRefused("scheme", url, "URL has no host")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        literal = True
    except ValueError:
        literal = False
    clean = parsed.copy_with(userinfo=b"", fragment=None)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return _Target(url=clean, url_text=str(clean), host=host, port=port, is_ip_literal=literal)


async def _resolve(target: _Target, policy: FetchPolicy) -> list[str]:
    """Resolve in a daemon thread: ``getaddrinfo`` cannot be cancelled, but a fetch that runs past
    its deadline must return on time, and an abandoned lookup must not hold the process."""
    if target.is_ip_literal:
        return [target.host]
    future: concurrent.futures.Future[Sequence[str]] = concurrent.futures.Future()

    def lookup() -> None:
        try:
            try:
                future.set_result(policy.resolver(target.host, target.port))
            except BaseException as exc:  # handed to the awaiting fetch, which reports it
                future.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass  # the fetch gave up waiting (its deadline passed): nobody wants the answer

    threading.Thread(target=lookup, name="pixellab-resolve", daemon=True).start()
    try:
        addresses = await asyncio.wrap_future(future)
    except (OSError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FetchRefused("dns", target.url_text,
                           f"cannot resolve {target.host}: {detail}") from None
    if not addresses:
        raise FetchRefused("dns", target.url_text, f"{target.host} has no address")
    return list(addresses)


@functools.lru_cache(maxsize=8)
def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    if ca_file is None:
        return httpx.create_ssl_context()
    return ssl.create_default_context(cafile=ca_file)


@dataclass(frozen=True)
class _Redirect:
    location: str


async def _hop(target: _Target, policy: FetchPolicy, kind: str, cap: int,
               time_left: float) -> Fetched | _Redirect:
    """One request to the vetted address of ``target``; a redirect is returned, not followed."""
    address = _vet_addresses(target, await _resolve(target, policy), policy)[0]
    pinned = httpx.URL(scheme=target.url.scheme, host=address, port=target.url.port,
                       raw_path=target.url.raw_path)
    headers = {"Host": target.host_header, "User-Agent": policy.user_agent,
               "Accept": _ACCEPT[kind], "Accept-Encoding": "identity"}
    extensions: dict[str, Any] = {}
    if target.url.scheme == "https" and not target.is_ip_literal:
        # The TLS handshake must name (and verify) the host, not the IP we connect to.
        extensions["sni_hostname"] = target.host
    # A fresh client per hop: a pooled TLS connection verified for one name must never carry a
    # request for another name that happens to share the address.
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                 verify=_ssl_context(policy.ca_file),
                                 timeout=httpx.Timeout(max(time_left, 0.001))) as client:
        request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException:
            raise _too_slow(target.url_text, policy) from None
        except httpx.TransportError as exc:
            raise FetchRefused("connection", target.url_text,
                               f"cannot connect to {target.host_header} ({address}): "
                               f"{type(exc).__name__}: {exc}") from None
        try:
            return await _read(response, target, policy, kind, cap)
        except httpx.TimeoutException:
            raise _too_slow(target.url_text, policy) from None
        except httpx.TransportError as exc:
            raise FetchRefused("connection", target.url_text,
                               f"connection failed mid-response: {type(exc).__name__}: {exc}"
                               ) from None
        finally:
            await response.aclose()


async def _read(response: httpx.Response, target: _Target, policy: FetchPolicy, kind: str,
                cap: int) -> Fetched | _Redirect:
    status = response.status_code
    if status in _REDIRECT_STATUSES:
        location = response.headers.get("location")
        if not location:
            raise FetchRefused("http_status", target.url_text,
                               f"HTTP {status} redirect without a Location", status=status)
        try:
            return _Redirect(str(target.url.join(location.strip())))
        except (httpx.InvalidURL, ValueError):
            raise FetchRefused("scheme", target.url_text,
                               f"redirect to an invalid URL {location[:200]!r}") from None
    if not 200 <= status < 300:
        raise FetchRefused("http_status", target.url_text,
                           f"HTTP {status} {response.reason_phrase}".rstrip(), status=status)
    content_type = response.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not _content_type_ok(kind, media_type):
        shown = repr(media_type) if media_type else "no Content-Type"
        raise FetchRefused("content_type", target.url_text,
                           f"content type {shown} is not {kind}")
    declared = response.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared.split(",")[0].strip())
        except ValueError:
            length = -1
        if length > cap:
            raise FetchRefused("too_large", target.url_text,
                               f"declares {length} bytes, over the {cap}-byte limit")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise FetchRefused("too_large", target.url_text,
                               f"body passed the {cap}-byte limit while streaming")
    charset = response.charset_encoding
    return Fetched(url=target.url_text, final_url=target.url_text, status=status,
                   content_type=media_type, body=bytes(body), charset=charset)


def _too_slow(url: str, policy: FetchPolicy) -> FetchRefused:
    return FetchRefused("too_slow", url,
                        f"no complete response within {policy.timeout_s:g} s (timeout_s)")


async def fetch_async(url: str, policy: FetchPolicy, *, kind: FetchKind = "html") -> Fetched:
    """Fetch ``url`` under ``policy``; the async form of :func:`fetch`."""
    if kind not in _ACCEPT:
        raise ValueError(f"kind must be one of {', '.join(_ACCEPT)}, not {kind!r}")
    cap = policy.max_image_bytes if kind == "image" else policy.max_bytes
    time_left = policy.timeout_s
    redirects: list[str] = []
    current = url
    while True:
        target = _parse_target(current)
        wait = policy.gate.reserve(target.host, policy.rate_per_host_s)
        if wait > 0:
            await asyncio.sleep(wait)
        if time_left <= 0:
            raise _too_slow(target.url_text, policy)
        started = time.monotonic()
        try:
            async with asyncio.timeout(time_left):
                outcome = await _hop(target, policy, kind, cap, time_left)
        except TimeoutError:
            raise _too_slow(target.url_text, policy) from None
        finally:
            policy.gate.finished(target.host, policy.rate_per_host_s)
        time_left -= time.monotonic() - started
        if isinstance(outcome, Fetched):
            first = str(_parse_target(url).url_text)
            return Fetched(url=first, final_url=outcome.final_url, status=outcome.status,
                           content_type=outcome.content_type, body=outcome.body,
                           redirects=redirects, charset=outcome.charset)
        if len(redirects) >= policy.max_redirects:
            raise FetchRefused("too_many_redirects", url,
                               f"more than {policy.max_redirects} redirects "
                               f"(last to {_display_url(outcome.location)})")
        redirects.append(outcome.location)
        current = outcome.location


def fetch(url: str, policy: FetchPolicy, *, kind: FetchKind = "html") -> Fetched:
    """Fetch ``url`` if, and only if, every rule of ``policy`` holds; else :class:`FetchRefused`.

    ``kind`` sets the accepted content types (``html``: text/html or XHTML; ``json``:
    application/json or ``+json``; ``image``: ``image/*`` except SVG, or octet-stream) and the cap
    (``max_image_bytes`` for images, ``max_bytes`` otherwise). The caller can rely on: no
    connection was made to an address the policy refuses, at any hop; the body is complete and
    within the cap; the status is 2xx.
    """
    return run_blocking(fetch_async(url, policy, kind=kind))


# --- text ------------------------------------------------------------------------------------

TITLE_MAX = 300
DESCRIPTION_MAX = 5000
SHORT_MAX = 200
TAGS_MAX = 50
IMAGES_MAX = 20
BREADCRUMBS_MAX = 20

# Control characters, and lone surrogates (a JSON "\ud83d" escape): UTF-8 cannot encode those,
# so a title holding one would break the manifest's write.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_BLOCK_TAGS = frozenset({"p", "br", "div", "li", "ul", "ol", "tr", "table", "section", "article",
                         "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "dd", "dt", "hr",
                         "header", "footer", "pre"})
_SKIP_TAGS = frozenset({"script", "style", "template", "noscript", "svg"})


class _LenientParser(HTMLParser):
    """:class:`HTMLParser` that reads any markup. Python 3.11's ``_markupbase`` raises
    AssertionError on a marked section it does not know (``<![ x``, ``<![foo[``); newer
    Pythons read it as a bogus comment, as browsers do, and so does this."""

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            return self.parse_bogus_comment(i, report)


class _TextParser(_LenientParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Plain text of an HTML fragment: tags and scripts dropped, entities decoded, blocks on
    their own lines, runs of spaces collapsed. The words themselves are kept as they are."""
    parser = _TextParser()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return _CONTROL.sub("", "\n".join(line for line in lines if line))


def _clean(value: Any, limit: int = SHORT_MAX) -> str:
    """A short untrusted string: entities decoded, whitespace collapsed, truncated."""
    if value is None or isinstance(value, dict | list | bool):
        return ""
    text = " ".join(html.unescape(str(value)).split())
    return _CONTROL.sub("", text)[:limit].strip()


def _description(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    return html_to_text(value)[:DESCRIPTION_MAX].strip()


def _slug(text: str, limit: int = 80) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:limit].strip("-")


def _url_slug(url: str) -> str:
    segments = [s for s in urlsplit(url).path.split("/") if s]
    return _slug(re.sub(r"\.[A-Za-z0-9]{1,5}$", "", segments[-1])) if segments else ""


def _product_id(*candidates: Any, url: str) -> str:
    """The first candidate that makes a non-empty slug; else one from the URL; else a hash."""
    for candidate in candidates:
        if isinstance(candidate, str | int) and not isinstance(candidate, bool):
            slug = _slug(str(candidate))
            if slug:
                return slug
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()
    return _url_slug(url) or "product-" + digest[:10]


def _join(base: str, reference: str) -> str | None:
    """``reference`` resolved against ``base`` if the result is an http(s) URL, else None
    (``urljoin`` raises ValueError on a malformed bracketed host such as ``http://[x``)."""
    try:
        absolute = urljoin(base, reference.strip())
        scheme = urlsplit(absolute).scheme
        absolute.encode("utf-8")  # a lone surrogate: no request can carry it
    except ValueError:
        return None
    return absolute if scheme in ("http", "https") else None


def _absolute(base: str, candidates: Iterable[Any]) -> list[str]:
    """http(s) URLs resolved against ``base``, deduplicated, at most :data:`IMAGES_MAX`."""
    found: list[str] = []
    for candidate in candidates:
        if not isinstance(candidate, str) or not candidate.strip():
            continue
        absolute = _join(base, candidate)
        if absolute is not None and absolute not in found:
            found.append(absolute)
        if len(found) >= IMAGES_MAX:
            break
    return found


def _tags(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    tags = [_clean(item, 100) for item in items if isinstance(item, str | int)]
    return list(dict.fromkeys(t for t in tags if t))[:TAGS_MAX]


# --- products --------------------------------------------------------------------------------

Source = Literal["shopify", "jsonld", "opengraph", "html"]


@dataclass(frozen=True)
class ScrapedProduct:
    """One product as a store page describes it. Every text field is untrusted page data, kept
    verbatim (truncated); ``category_hint`` is the store's own structured category, to be
    refined later, never derived from free text."""

    id: str
    title: str
    url: str
    source: Source
    description: str = ""
    category_hint: str | None = None
    breadcrumbs: list[str] = field(default_factory=list)
    brand: str | None = None
    price: str | None = None
    currency: str | None = None
    image_urls: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


def _list(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else ``[]`` (a page's ``"variants": 5``)."""
    return value if isinstance(value, list) else []


def _shopify_product(data: dict[str, Any], origin: str) -> ScrapedProduct | None:
    handle = data.get("handle")
    title = _clean(data.get("title"), TITLE_MAX)
    if not title or not isinstance(handle, str) or not handle:
        return None
    url = f"{origin}/products/{quote(handle, safe='', errors='replace')}"
    variants = [v for v in _list(data.get("variants")) if isinstance(v, dict)]
    price = next((v.get("price") for v in variants if v.get("price") not in (None, "")), None)
    currency = next((v.get("price_currency") for v in variants if v.get("price_currency")), None)
    images = [i.get("src") for i in _list(data.get("images")) if isinstance(i, dict)]
    if not images and isinstance(data.get("image"), dict):
        images = [data["image"].get("src")]
    return ScrapedProduct(
        id=_product_id(handle, url=url), title=title, url=url, source="shopify",
        description=_description(data.get("body_html")),
        category_hint=_clean(data.get("product_type")) or None,
        brand=_clean(data.get("vendor")) or None,
        price=_clean(price, 40) or None, currency=_clean(currency, 10) or None,
        image_urls=_absolute(url, images), tags=_tags(data.get("tags")))


def products_from_shopify(data: Any, origin: str) -> list[ScrapedProduct]:
    """The products of a Shopify ``products.json`` document (``{"products": [...]}``) or of a
    ``products/<handle>.json`` one (``{"product": {...}}``), their URLs under ``origin``.

    No I/O. Any parsed JSON is accepted: items that are not product objects, or lack a title or
    a handle, are left out, so a document of another shape gives ``[]``. Ids are unique (a
    repeated handle gets ``-2``, ``-3``…).
    """
    if not isinstance(data, dict):
        return []
    items = data.get("products")
    if not isinstance(items, list):
        items = [data.get("product")]
    products = (_shopify_product(item, origin) for item in items if isinstance(item, dict))
    return _unique_ids([product for product in products if product is not None])


class _NotShopify(Exception):
    """The Shopify endpoint is not there (or not Shopify's): try the page itself."""


_NOT_SHOPIFY_REASONS = frozenset({"http_status", "content_type", "too_many_redirects"})


def _shopify_json(url: str, policy: FetchPolicy) -> Any:
    try:
        return fetch(url, policy, kind="json").json()
    except FetchRefused as exc:
        if exc.reason in _NOT_SHOPIFY_REASONS:
            raise _NotShopify(str(exc)) from None
        raise
    except (ValueError, RecursionError):
        raise _NotShopify(f"{_display_url(url)}: not JSON") from None


def _scrape_shopify_listing(prefix: str, origin: str, policy: FetchPolicy,
                            max_products: int) -> list[ScrapedProduct]:
    limit = min(250, max_products)  # Shopify's largest page
    products: list[ScrapedProduct] = []
    for page in range(1, 1 + (max_products + limit - 1) // limit):
        data = _shopify_json(f"{prefix}/products.json?limit={limit}&page={page}", policy)
        items = data.get("products") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise _NotShopify("no products list")
        products += products_from_shopify(data, origin)
        if len(items) < limit:
            break
    return products[:max_products]


def _scrape_shopify_product(origin: str, handle: str, policy: FetchPolicy) -> ScrapedProduct:
    data = _shopify_json(f"{origin}/products/{handle}.json", policy)
    item = data.get("product") if isinstance(data, dict) else None
    product = _shopify_product(item, origin) if isinstance(item, dict) else None
    if product is None:
        raise _NotShopify("no product object")
    return product


class _PageParser(_LenientParser):
    """Collects what extraction needs from a page in one pass; never raises on bad markup."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.meta: dict[str, list[str]] = {}
        self.ld_json: list[str] = []
        self.images: list[dict[str, str]] = []
        self.base_href: str | None = None
        self._in_title = False
        self._in_ld = False
        self._ld_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v or "" for k, v in attrs}
        if tag == "title" and not self.title:
            self._in_title = True
        elif tag == "meta":
            key = (values.get("property") or values.get("name") or "").strip().lower()
            if key and "content" in values and len(self.meta.get(key, ())) < IMAGES_MAX:
                self.meta.setdefault(key, []).append(values["content"])
        elif tag == "script":
            kind = values.get("type", "").split(";", 1)[0].strip().lower()
            if kind == "application/ld+json":
                self._in_ld, self._ld_parts = True, []
        elif tag == "img" and len(self.images) < 200:
            self.images.append(values)
        elif tag == "base" and self.base_href is None and values.get("href"):
            self.base_href = values["href"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "script" and self._in_ld:
            self._in_ld = False
            self.ld_json.append("".join(self._ld_parts))

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif self._in_ld:
            self._ld_parts.append(data)

    def first(self, *keys: str) -> str:
        for key in keys:
            for value in self.meta.get(key, []):
                if value.strip():
                    return value
        return ""


def _types(node: dict[str, Any]) -> set[str]:
    raw = node.get("@type")
    names = raw if isinstance(raw, list) else [raw]
    return {re.split(r"[/:#]", n)[-1] for n in names if isinstance(n, str)}


_PRODUCT_TYPES = frozenset({"Product", "ProductGroup", "IndividualProduct", "ProductModel"})


def _typed_nodes(data: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    """Every node with an ``@type``, through lists, ``@graph`` and nesting (bounded); a
    product's own children (offers, brand, related products) are not walked."""
    if depth > 10:
        return
    if isinstance(data, list):
        for item in data:
            yield from _typed_nodes(item, depth + 1)
    elif isinstance(data, dict):
        types = _types(data)
        if types:
            yield data
        if types & _PRODUCT_TYPES:
            return
        for key, value in data.items():
            if key != "@context" and isinstance(value, dict | list):
                yield from _typed_nodes(value, depth + 1)


def _ld_blocks(texts: list[str]) -> list[Any]:
    """Parsed JSON-LD blocks; a block that is not valid JSON is skipped, never fatal."""
    blocks: list[Any] = []
    for text in texts:
        text = text.strip()
        text = re.sub(r"^\s*(?://\s*)?<!\[CDATA\[|(?://\s*)?\]\]>\s*$", "", text)
        text = re.sub(r"^<!--|-->$", "", text.strip()).strip()
        try:
            blocks.append(json.loads(text))
        except (ValueError, RecursionError):
            log.debug("skipping a malformed JSON-LD block (%d chars)", len(text))
    return blocks


# Lists in lists are walked this deep and no deeper, like _typed_nodes: a page can nest JSON
# as deep as json.loads allows (about the recursion limit), and a walk one frame per level
# would then overflow the stack.
_NESTING_MAX = 10


def _name(value: Any, depth: int = 0) -> str:
    """A name from a string, a ``{"name": …}`` object, or the first of a list of either."""
    if isinstance(value, list):
        if depth >= _NESTING_MAX:
            return ""
        return next((n for n in (_name(v, depth + 1) for v in value) if n), "")
    if isinstance(value, dict):
        return _clean(value.get("name"))
    return _clean(value)


def _ld_images(value: Any, depth: int = 0) -> list[Any]:
    if isinstance(value, list):
        if depth >= _NESTING_MAX:
            return []
        return [u for item in value for u in _ld_images(item, depth + 1)]
    if isinstance(value, dict):
        return [value.get("url") or value.get("contentUrl")]
    return [value]


def _ld_offer(value: Any) -> tuple[str | None, str | None]:
    offers = value if isinstance(value, list) else [value]
    for offer in offers:
        if not isinstance(offer, dict):
            continue
        price = offer.get("price", offer.get("lowPrice"))
        currency = offer.get("priceCurrency")
        spec = offer.get("priceSpecification")
        for item in spec if isinstance(spec, list) else [spec]:
            if price is None and isinstance(item, dict):
                price, currency = item.get("price"), currency or item.get("priceCurrency")
        if price is not None and not isinstance(price, dict | list):
            return _clean(price, 40) or None, _clean(currency, 10) or None
    return None, None


def _breadcrumbs(nodes: list[dict[str, Any]]) -> list[str]:
    for node in nodes:
        if "BreadcrumbList" not in _types(node):
            continue
        elements = node.get("itemListElement")
        if not isinstance(elements, list):
            continue
        ranked: list[tuple[float, int, str]] = []
        for index, element in enumerate(elements):
            if not isinstance(element, dict):
                continue
            name = _clean(element.get("name")) or _name(element.get("item"))
            try:
                position = float(element.get("position", index))
            except (TypeError, ValueError, OverflowError):  # OverflowError: a 400-digit int
                position = float(index)
            if name:
                ranked.append((position, index, name))
        return [name for _, _, name in sorted(ranked)][:BREADCRUMBS_MAX]
    return []


def _from_jsonld(parser: _PageParser, page_url: str, base: str) -> list[ScrapedProduct]:
    nodes = [n for block in _ld_blocks(parser.ld_json) for n in _typed_nodes(block)]
    crumbs = _breadcrumbs(nodes)
    products: list[ScrapedProduct] = []
    for node in nodes:
        if not _types(node) & _PRODUCT_TYPES:
            continue
        title = _clean(node.get("name"), TITLE_MAX)
        if not title:
            continue
        own_url = _absolute(base, [node.get("url")])
        url = own_url[0] if own_url else page_url
        category = _name(node.get("category")) or None
        if category is None and crumbs:
            # The last crumb is often the product itself; the one before is its category.
            trail = crumbs[:-1] if crumbs[-1] == title and len(crumbs) > 1 else crumbs
            category = trail[-1] if trail[-1] != title else None
        price, currency = _ld_offer(node.get("offers"))
        products.append(ScrapedProduct(
            id=_product_id(node.get("sku"), node.get("productID"), node.get("mpn"),
                           node.get("gtin13"), node.get("gtin"), url=url),
            title=title, url=url, source="jsonld",
            description=_description(node.get("description")),
            category_hint=category, breadcrumbs=crumbs, brand=_name(node.get("brand")) or None,
            price=price, currency=currency,
            image_urls=_absolute(base, _ld_images(node.get("image"))),
            tags=_tags(node.get("keywords"))))
    return products


_ICON_HINT = re.compile(r"logo|icon|sprite|spacer|pixel|avatar|badge|favicon", re.IGNORECASE)


def _large_image(parser: _PageParser) -> str | None:
    """The first ``<img>`` that looks like a product photo: declared ≥ 200×200, else the first
    undeclared one that is not an icon, logo, SVG or data URI."""
    fallback: str | None = None
    for img in parser.images:
        src = (img.get("src") or img.get("data-src") or "").strip()
        if not src or src.startswith("data:") or src.lower().split("?")[0].endswith(".svg"):
            continue
        try:
            width, height = int(img.get("width", "")), int(img.get("height", ""))
        except ValueError:
            if fallback is None and not _ICON_HINT.search(
                    " ".join((src, img.get("class", ""), img.get("alt", "")))):
                fallback = src
            continue
        if width >= 200 and height >= 200:
            return src
    return fallback


def _from_meta(parser: _PageParser, page_url: str, base: str) -> list[ScrapedProduct]:
    """OpenGraph when the page has it, else the plain HTML title, description and image."""
    og_title = parser.first("og:title")
    og_images = [v for key in ("og:image", "og:image:secure_url", "og:image:url")
                 for v in parser.meta.get(key, [])]
    source: Source = "opengraph" if og_title or og_images else "html"
    title = _clean(og_title or parser.title, TITLE_MAX)
    if not title:
        return []
    description = parser.first("og:description", "description")
    large = _large_image(parser)
    images = og_images or ([large] if large else [])
    price = parser.first("product:price:amount", "og:price:amount")
    currency = parser.first("product:price:currency", "og:price:currency")
    return [ScrapedProduct(
        id=_product_id(parser.first("product:retailer_item_id"), url=page_url),
        title=title, url=page_url, source=source,
        description=_description(description),
        category_hint=_clean(parser.first("product:category")) or None,
        brand=_clean(parser.first("product:brand", "og:brand")) or None,
        price=_clean(price, 40) or None, currency=_clean(currency, 10) or None,
        image_urls=_absolute(base, images))]


def products_from_html(markup: str, page_url: str) -> list[ScrapedProduct]:
    """The products a page's markup describes: schema.org JSON-LD first, else OpenGraph, else
    the plain ``<title>``, meta description and first large image; ``[]`` when none.

    No I/O: ``page_url`` (http or https) only resolves relative URLs and stands in for a
    product's own URL. Any markup is accepted: malformed HTML, JSON-LD that is not JSON or not
    schema.org's shape, a ``<base href>`` that is not a URL. Every image URL returned is
    absolute http(s) and ids are unique.
    """
    parser = _PageParser()
    parser.feed(markup)
    parser.close()
    base = page_url
    if parser.base_href:
        base = _join(page_url, parser.base_href) or page_url
    return _unique_ids(_from_jsonld(parser, page_url, base)
                       or _from_meta(parser, page_url, base))


def _scrape_page(url: str, policy: FetchPolicy) -> list[ScrapedProduct]:
    page = fetch(url, policy, kind="html")
    return products_from_html(page.text(), page.final_url)


def _unique_ids(products: list[ScrapedProduct]) -> list[ScrapedProduct]:
    seen: set[str] = set()
    unique: list[ScrapedProduct] = []
    for product in products:
        product_id, n = product.id, 1
        while product_id in seen:
            n += 1
            product_id = f"{product.id}-{n}"
        seen.add(product_id)
        unique.append(product if product_id == product.id else
                      dataclasses.replace(product, id=product_id))
    return unique


_SHOPIFY_PRODUCT = re.compile(r"^(?:/collections/[^/]+)?/products/([^/.]+)/?$")
_SHOPIFY_LISTING = re.compile(r"^(?P<prefix>/collections/[^/]+)?(?:/?|/products\.json)$")


def scrape(url: str, policy: FetchPolicy, *, max_products: int = 50) -> list[ScrapedProduct]:
    """Products described at ``url``, best source first.

    1. Shopify: a store root or ``/collections/<c>`` reads ``products.json`` (paginated, up to
       ``max_products``); a ``/products/<handle>`` page reads ``/products/<handle>.json``.
       If the endpoint is absent (an HTTP error, not JSON, not Shopify's shape), go on.
    2. The page's schema.org ``Product`` JSON-LD (``@graph``, lists, nested nodes; malformed
       blocks are skipped), with breadcrumbs from a ``BreadcrumbList``.
    3. OpenGraph meta tags; 4. the ``<title>``, meta description and first large ``<img>``.

    Every request goes through :func:`fetch` under ``policy``; a refusal other than "endpoint not
    there" (a private address, too slow, too large…) is raised, not skipped. Ids are unique
    within the result. Returns ``[]`` when the page names no product at all.
    """
    target = _parse_target(url)
    origin = f"{target.url.scheme}://{target.url.netloc.decode('ascii')}"
    path = target.url.path
    try:
        product_match = _SHOPIFY_PRODUCT.match(path)
        listing_match = _SHOPIFY_LISTING.match(path)
        if product_match:
            return [_scrape_shopify_product(origin, product_match.group(1), policy)]
        if listing_match:
            prefix = origin + (listing_match.group("prefix") or "")
            products = _scrape_shopify_listing(prefix, origin, policy, max_products)
            if products:
                return _unique_ids(products)
    except _NotShopify as exc:
        log.debug("not a Shopify endpoint, reading the page: %s", exc)
    return _unique_ids(_scrape_page(url, policy))[:max_products]


# --- into a dataset --------------------------------------------------------------------------

_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder and ``os.replace`` it into place, so a
    reader sees the old file or the new one, never half of one."""
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                         delete=False)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def download_images(product: ScrapedProduct, dest_dir: str | os.PathLike[str],
                    policy: FetchPolicy, max_images: int = 1) -> list[Path]:
    """Download up to ``max_images`` of the product's images into ``dest_dir``.

    Each image is fetched with ``kind="image"`` and validated by
    :func:`~pixellab.validate.decode_image` (PNG/JPEG/WEBP only, pixel limits, fully decoded)
    before anything is written; the original bytes are saved as
    ``<product id>-<sha256[:12]>.<ext>``, atomically. Raises :class:`FetchRefused` or
    :class:`~pixellab.errors.InvalidImage` (naming the URL) on the first image that fails;
    files already saved for earlier images stay.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    stem = _slug(product.id) or "product"
    saved: list[Path] = []
    for image_url in product.image_urls[:max_images]:
        body = fetch(image_url, policy, kind="image").body
        try:
            image = decode_image(body, max_bytes=policy.max_image_bytes)
        except InvalidImage as exc:
            raise InvalidImage(exc.reason, f"{_display_url(image_url)}: {exc}") from None
        extension = _EXTENSIONS[str(image.format)]
        path = dest / f"{stem}-{hashlib.sha256(body).hexdigest()[:12]}.{extension}"
        if not path.exists():
            _write_atomic(path, body)
        saved.append(path)
    return saved


MANIFEST_COLUMNS: tuple[str, ...] = (
    "id", "title", "description", "category", "image", "mask", "reference",
    "source", "url", "brand", "price", "currency", "tags", "breadcrumbs", "image_url",
    "store_category",
)
"""Columns :func:`import_products` fills; an existing manifest keeps its own columns and order,
and gains the missing ones (empty in its old rows)."""


def _read_manifest(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.exists():
        return [], []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        rows: list[dict[str, str]] = []
        for row in reader:
            if None in row:
                raise ConfigError(f"row {reader.line_num} has more fields than the header",
                                  path=str(path))
            rows.append({k: v or "" for k, v in row.items()})
        return list(reader.fieldnames or []), rows


def _write_manifest(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Replace the manifest atomically: a reader sees the old file or the new one."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(path, text.getvalue().encode("utf-8"))


def _manifest_row(product: ScrapedProduct, image: str, image_url: str) -> dict[str, str]:
    return {
        "id": product.id, "title": product.title, "description": product.description,
        "category": product.category_hint or "uncategorized", "image": image,
        "mask": "", "reference": "", "source": product.source, "url": product.url,
        "brand": product.brand or "", "price": product.price or "",
        "currency": product.currency or "", "tags": ", ".join(product.tags),
        "breadcrumbs": " > ".join(product.breadcrumbs), "image_url": image_url,
        "store_category": product.category_hint or "",
    }


def import_products(url: str, dataset_dir: str | os.PathLike[str], policy: FetchPolicy, *,
                    max_products: int = 50) -> list[str]:
    """Scrape ``url`` and add each new product, with one validated image, to the dataset's
    ``manifest.csv``; returns the ids added, in order.

    Products whose id is already in the manifest are skipped (re-running an import is a no-op).
    A product with no image, or whose image is refused or invalid, is skipped with a logged
    warning: a dataset row needs an image. Existing rows and columns are kept as they are; new
    columns (see :data:`MANIFEST_COLUMNS`) are added, empty in old rows. ``category`` is the
    store's category or ``uncategorized``. The manifest is replaced atomically.
    """
    root = Path(dataset_dir)
    if (root / "manifest.parquet").exists():
        raise ConfigError("import writes manifest.csv, but this dataset uses manifest.parquet "
                          "(which load_dataset prefers)", path=str(root))
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "manifest.csv"
    header, rows = _read_manifest(manifest)
    known = {row.get("id", "").strip() for row in rows}
    added: list[str] = []
    for product in scrape(url, policy, max_products=max_products):
        if product.id in known:
            continue
        if not product.image_urls:
            log.warning("skipping product %s (%s): no image found", product.id,
                        _display_url(product.url))
            continue
        try:
            saved = download_images(product, root / "images", policy, max_images=1)
        except (FetchRefused, InvalidImage) as exc:
            log.warning("skipping product %s: %s", product.id, exc)
            continue
        image = saved[0].relative_to(root).as_posix()
        rows.append(_manifest_row(product, image, product.image_urls[0]))
        known.add(product.id)
        added.append(product.id)
    if added:
        _write_manifest(manifest, header + [c for c in MANIFEST_COLUMNS if c not in header],
                        rows)
    return added


def relabel(dataset_dir: str | os.PathLike[str], categories: dict[str, str]) -> int:
    """Set ``category`` of the given product ids in the dataset's ``manifest.csv`` (e.g. to
    what an analysis answered), keeping the store's own words in ``store_category``. Other rows
    and columns are untouched; the manifest is replaced atomically. Returns rows changed."""
    manifest = Path(dataset_dir) / "manifest.csv"
    header, rows = _read_manifest(manifest)
    if not header:
        raise ConfigError("no manifest.csv to relabel", path=str(manifest))
    columns = header + [c for c in ("store_category",) if c not in header]
    changed = 0
    for row in rows:
        new = categories.get(row.get("id", "").strip())
        if new and row.get("category") != new:
            if not row.get("store_category"):
                row["store_category"] = row.get("category", "")
            row["category"] = new
            changed += 1
    if changed:
        _write_manifest(manifest, columns, rows)
    return changed
