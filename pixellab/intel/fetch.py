"""Safe fetch: get a page, a JSON document or an image from a URL that a user (or a page) handed
us, without letting that URL reach anything it should not.

A URL is untrusted: it may name ``file://``, a cloud metadata endpoint (``169.254.169.254``), an
intranet host, a hostname whose DNS answer is private, or a server that redirects to any of those,
sends 10 GB or drips one byte a second. :func:`fetch` (and :func:`fetch_async`) under a
:class:`FetchPolicy` allows only http(s); resolves the host itself and refuses if *any* address is
not public (unless allow-listed); connects to the address it vetted (the IP goes in the URL, the
name in ``Host`` and in TLS SNI, so DNS cannot change between check and connect); follows
redirects by hand and vets every hop; caps the body by its declared length and while streaming;
caps the whole fetch by wall-clock time; checks the content type; and spaces requests to one host
(:class:`HostGate`). Every refusal is a :class:`~pixellab.errors.FetchRefused` with a stable
``reason``.

Why a module of its own: this is the security boundary of product intelligence, and it knows
nothing about products. It returns bytes that passed every check (:class:`Fetched`); what they
mean is :mod:`pixellab.intel.extract`'s business, and what is done with them is
:mod:`pixellab.intel.scrape`'s. It imports neither.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import functools
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from pixellab.blocking import run_blocking
from pixellab.errors import ConfigError, FetchRefused
from pixellab.redact import display_url

__all__ = [
    "FetchKind",
    "FetchPolicy",
    "Fetched",
    "HostGate",
    "Resolver",
    "fetch",
    "fetch_async",
    "system_resolver",
]

_MIB = 1024 * 1024

FetchKind = Literal["html", "json", "image"]
"""What a fetch expects; it decides the accepted content types and the size cap."""

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> IP address strings``: the DNS boundary, replaceable in tests and intranets."""


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
                               f"(last to {display_url(outcome.location)})")
        redirects.append(outcome.location)
        current = outcome.location


async def vet_url(url: str, policy: FetchPolicy) -> None:
    """Refuse (:class:`FetchRefused`) a URL a fetch under ``policy`` would refuse before
    connecting: its scheme, its host's addresses. For URLs we will post to later (a job's
    callback), checked when they are given."""
    target = _parse_target(url)
    _vet_addresses(target, await _resolve(target, policy), policy)


def fetch(url: str, policy: FetchPolicy, *, kind: FetchKind = "html") -> Fetched:
    """Fetch ``url`` if, and only if, every rule of ``policy`` holds; else :class:`FetchRefused`.

    ``kind`` sets the accepted content types (``html``: text/html or XHTML; ``json``:
    application/json or ``+json``; ``image``: ``image/*`` except SVG, or octet-stream) and the cap
    (``max_image_bytes`` for images, ``max_bytes`` otherwise). The caller can rely on: no
    connection was made to an address the policy refuses, at any hop; the body is complete and
    within the cap; the status is 2xx.
    """
    return run_blocking(fetch_async(url, policy, kind=kind))
