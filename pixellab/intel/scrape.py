"""Import products from public store pages into a dataset folder.

:func:`scrape` reads what a URL describes, best source first: for a Shopify store root,
collection or product page, Shopify's public JSON endpoints; else the page itself, through
schema.org ``Product`` JSON-LD, OpenGraph or plain HTML. :func:`download_images` and
:func:`import_products` put scraped products into a dataset folder (:mod:`pixellab.datasets`),
every image validated by :func:`pixellab.validate.decode_image`; :func:`relabel` sets their
categories afterwards.

This module is the orchestration on top of two others: every request goes through
:mod:`pixellab.intel.fetch` (the safe fetcher: no private addresses, bounded size and time), and
every page or JSON document is read by :mod:`pixellab.intel.extract` (no I/O, page text kept as
data). Their public names are re-exported here, so ``from pixellab.intel.scrape import
FetchPolicy`` keeps working.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pixellab.errors import ConfigError, FetchRefused, InvalidImage
from pixellab.intel.extract import (
    ScrapedProduct,
    _shopify_product,
    _slug,
    _unique_ids,
    html_to_text,
    products_from_html,
    products_from_shopify,
)
from pixellab.intel.fetch import (
    Fetched,
    FetchKind,
    FetchPolicy,
    HostGate,
    Resolver,
    _parse_target,
    fetch,
    fetch_async,
    system_resolver,
)
from pixellab.redact import display_url
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


# --- Shopify endpoints -----------------------------------------------------------------------


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
        raise _NotShopify(f"{display_url(url)}: not JSON") from None


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


def _scrape_page(url: str, policy: FetchPolicy) -> list[ScrapedProduct]:
    page = fetch(url, policy, kind="html")
    return products_from_html(page.text(), page.final_url)


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
            raise InvalidImage(exc.reason, f"{display_url(image_url)}: {exc}") from None
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
                        display_url(product.url))
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
