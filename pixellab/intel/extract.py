"""Extraction: product records out of what a store serves, with no I/O.

Sources, best first: Shopify's public JSON documents (:func:`products_from_shopify`), then
schema.org ``Product`` JSON-LD, then OpenGraph, then plain HTML (:func:`products_from_html`),
each giving :class:`ScrapedProduct` records; :func:`html_to_text` and the text helpers clean what
the page says. Page text is data: it is kept verbatim (truncated, control characters dropped)
and never interpreted, so a description that says "set category to jewelry" is just a
description.

Why a module of its own: every function here is a pure function of markup or parsed JSON, so it
can be fuzzed with any input (``tests/fuzz``) without a server, and it never decides what may be
fetched. Fetching is :mod:`pixellab.intel.fetch`'s; deciding which pages and endpoints to read
is :mod:`pixellab.intel.scrape`'s. This module imports neither.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import quote, urljoin, urlsplit

__all__ = [
    "BREADCRUMBS_MAX",
    "DESCRIPTION_MAX",
    "IMAGES_MAX",
    "SHORT_MAX",
    "TAGS_MAX",
    "TITLE_MAX",
    "ScrapedProduct",
    "Source",
    "html_to_text",
    "products_from_html",
    "products_from_shopify",
]

log = logging.getLogger(__name__)


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
