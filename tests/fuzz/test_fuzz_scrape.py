"""Fuzzing what a store page can hand the scraper: HTML, schema.org JSON-LD, OpenGraph tags,
Shopify's JSON, the page's bytes and charset; and the ``allow`` entries a user types.

Pages are realistic but hostile: the shapes a store really serves (JSON-LD ``Product`` nodes,
``@graph``, breadcrumbs, offers, ``og:*`` tags, ``<base>``, ``<img>``), with every value
replaced at will by the wrong type (a number, a list, ``null`` where a string belongs), huge or
deeply nested values, lone surrogates, control characters, broken markup and broken JSON.
Each target must end in products (or a policy) or a one-line :class:`PixellabError`, and what
it returns must hold the cheap invariants callers rely on (http(s) image URLs, one-line short
titles, unique ids, text that encodes as UTF-8 for the manifest). Every case found is saved in
``corpus/scrape/`` and replayed by :func:`test_saved_scrape_cases_stay_fixed`.
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixellab.errors import ConfigError
from pixellab.intel.extract import (
    BREADCRUMBS_MAX,
    DESCRIPTION_MAX,
    IMAGES_MAX,
    TAGS_MAX,
    TITLE_MAX,
    ScrapedProduct,
    products_from_html,
    products_from_shopify,
)
from pixellab.intel.fetch import Fetched, FetchPolicy
from tests.fuzz.conftest import corpus_params, result_or_clear_error

# The strategies below are large (400-digit numbers, every schema.org key), so hypothesis warns
# when it writes their repr for statistics; that costs milliseconds and says nothing.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

PAGE_URL = "https://shop.test/products/kettle"
ORIGINS = ("https://shop.test", "http://127.0.0.1:8080", "https://[::1]:8443")

# --- the invariants -----------------------------------------------------------------------------

_C0 = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str, limit: int) -> None:
    assert 0 < len(text) <= limit and text == text.strip(), repr(text)
    assert not _C0.search(text), repr(text)
    text.encode("utf-8")  # the manifest is UTF-8: a lone surrogate here would crash its write


def assert_sane(products: list[ScrapedProduct]) -> None:
    """What every caller of the extraction may rely on, whatever the page said."""
    ids = [p.id for p in products]
    assert all(ids) and len(set(ids)) == len(ids), ids
    for product in products:
        _one_line(product.title, TITLE_MAX)
        for value, limit in ((product.brand, 200), (product.category_hint, 200),
                             (product.price, 40), (product.currency, 10)):
            if value is not None:
                _one_line(value, limit)
        for tag in product.tags:
            _one_line(tag, 100)
        for crumb in product.breadcrumbs:
            _one_line(crumb, 200)
        assert len(product.tags) <= TAGS_MAX and len(product.breadcrumbs) <= BREADCRUMBS_MAX
        assert len(product.description) <= DESCRIPTION_MAX
        product.description.encode("utf-8")
        assert len(product.image_urls) <= IMAGES_MAX
        for url in (product.url, *product.image_urls):
            assert urlsplit(url).scheme in ("http", "https"), url
            url.encode("utf-8")


# --- strategies ---------------------------------------------------------------------------------

SCHEMA_KEYS = ("@context", "@type", "@graph", "@id", "name", "description", "url", "image",
               "sku", "productID", "mpn", "gtin13", "gtin", "brand", "category", "keywords",
               "offers", "price", "lowPrice", "priceCurrency", "priceSpecification",
               "itemListElement", "position", "item", "contentUrl")
TYPES = ("Product", "ProductGroup", "IndividualProduct", "ProductModel", "BreadcrumbList",
         "ListItem", "Offer", "AggregateOffer", "Brand", "ImageObject", "WebPage",
         "http://schema.org/Product", "schema:Product", "")

# Strings a hostile or broken page really carries: markup in values, entity tricks, URLs that
# are not (or barely) URLs, numbers as text, separators and characters that break one-liners.
NASTY_TEXT = ("", " ", "\x00", "\x1b[31m", "\u2028", "\x85", "\ud800", "\udfff", "&#0;",
              "&#x110000;", "&amp;amp;", "&", "<![ x", "<![if !IE]>", "</script>", "<p>", "\t\n",
              "http://[", "http://[::1", "https://a.test/x.png", "//cdn.test/x.png",
              "/img/x.jpg", "x.jpg", "javascript:alert(1)", "data:image/png;base64,AA",
              "file:///etc/passwd", "1e999", "NaN", "-0", "0x10", "٣", "１２", "ｈｔｔｐ://x")

text_values = st.one_of(
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=30),
    st.builds(lambda chunk, n: chunk * n, st.sampled_from(("a", "é ", "<b>", "\ud83d", "&lt;")),
              st.integers(0, 30_000)),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(),
    st.sampled_from((10**400, -(10**400), 2**63, 0.1, -1)), text_values,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=6)), inner,
                        max_size=5)),
    max_leaves=12,
)
# Markup a description may hold: html_to_text reads it.
FRAGMENTS_LD = ("<p>VG-10 <em>steel</em></p>", "<![ x", "<![if x]>", "<!x[y]>", "<script>x",
                "&#xd800;", "<br>" * 3, "<style>p{}</style>text")

# A value of the wrong type or range, for a field that wants a string, a list or a small number.
WRONG: tuple[Any, ...] = (None, True, 0, -1, 10**400, -(10**400), 1e308, float("nan"),
                          float("inf"), "", [], {}, [[]], {"name": None})

# Where a number is wanted (a position, a price): numbers no float holds, or not numbers.
NUMBERS_ODD: tuple[Any, ...] = (10**400, -(10**400), 1e308, float("nan"), float("-inf"), "3",
                                "2.5", "x", None, True, [1], {"@value": 1})


def sometimes_wrong(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly what schema.org or Shopify says goes there; else any JSON value (a number, a
    list, ``null``, an object) or a nasty string."""
    return st.one_of(right, right, right, st.sampled_from(WRONG), scalars, json_values)


names = st.one_of(st.sampled_from(("Kettle", "Chef&#39;s Knife 20 cm", "Wool &amp; Throw",
                                   "  Mug\n ")), text_values)
url_texts = st.one_of(st.sampled_from(("/img/a.jpg", "b.png", "https://cdn.test/c.webp",
                                       "//cdn.test/d.jpg", "../e.jpg")), text_values)
prices = st.one_of(st.sampled_from(("24.00", "1,299.99", "")), st.integers(), st.floats(),
                   st.sampled_from(NUMBERS_ODD))
image_values = sometimes_wrong(st.recursive(
    st.one_of(url_texts, st.fixed_dictionaries(
        {"@type": st.just("ImageObject")},
        optional={"url": sometimes_wrong(url_texts), "contentUrl": sometimes_wrong(url_texts)})),
    lambda inner: st.lists(inner, max_size=3), max_leaves=5))
offer = st.fixed_dictionaries(
    {"@type": st.sampled_from(("Offer", "AggregateOffer"))},
    optional={"price": sometimes_wrong(prices), "lowPrice": sometimes_wrong(prices),
              "priceCurrency": sometimes_wrong(st.sampled_from(("EUR", "usd", ""))),
              "priceSpecification": sometimes_wrong(st.lists(st.fixed_dictionaries(
                  {}, optional={"price": sometimes_wrong(prices),
                                "priceCurrency": text_values}), max_size=2))})
named = st.one_of(names, st.fixed_dictionaries({"@type": st.just("Brand"),
                                                "name": sometimes_wrong(names)}))
products_ld = st.fixed_dictionaries(
    {"@type": sometimes_wrong(st.sampled_from(TYPES[:4]) | st.just(["Product", "Thing"])),
     "name": sometimes_wrong(names)},
    optional={
        "image": image_values,
        "offers": sometimes_wrong(st.one_of(offer, st.lists(offer, max_size=3))),
        "brand": sometimes_wrong(st.one_of(named, st.lists(named, max_size=3))),
        "category": sometimes_wrong(st.one_of(named, st.lists(named, max_size=3))),
        "sku": sometimes_wrong(st.one_of(names, st.integers())),
        "productID": sometimes_wrong(names), "gtin13": scalars, "mpn": scalars,
        "url": sometimes_wrong(url_texts),
        "description": sometimes_wrong(st.one_of(text_values, st.sampled_from(FRAGMENTS_LD))),
        "keywords": sometimes_wrong(st.one_of(names, st.lists(names, max_size=4))),
    })
list_items = st.fixed_dictionaries(
    {"@type": st.just("ListItem"),
     "position": st.one_of(st.integers(0, 5), st.sampled_from(NUMBERS_ODD))},
    optional={"name": sometimes_wrong(names),
              "item": sometimes_wrong(st.one_of(url_texts, st.fixed_dictionaries(
                  {"@id": url_texts, "name": sometimes_wrong(names)})))})
breadcrumbs_ld = st.fixed_dictionaries(
    {"@type": st.just("BreadcrumbList"),
     "itemListElement": sometimes_wrong(st.lists(sometimes_wrong(list_items), min_size=1,
                                                 max_size=5))})


schema_types = st.one_of(st.sampled_from(TYPES), st.lists(st.sampled_from(TYPES), max_size=3),
                         json_values)


def _node(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A schema.org-shaped object of no particular kind: any key may hold any value."""
    value = st.one_of(text_values, json_values, children)
    return st.fixed_dictionaries({"@type": schema_types},
                                 optional={key: value for key in SCHEMA_KEYS if key != "@type"})


schema_nodes = st.recursive(
    st.one_of(products_ld, products_ld, breadcrumbs_ld, _node(st.nothing())),
    lambda inner: st.one_of(_node(inner), st.lists(inner, max_size=3),
                            st.fixed_dictionaries({"@graph": st.lists(inner, max_size=4)},
                                                  optional={"@context": json_values})),
    max_leaves=6,
)


@st.composite
def deep_jsonld(draw: st.DrawFn) -> str:
    """A Product whose field holds a list or object nested thousands deep: JSON that parses
    (up to the interpreter's limit) and then has to be walked."""
    # Which depth breaks a recursive walk depends on the recursion limit (hypothesis raises it
    # while a test runs) and on the stack the caller already uses: cover the whole band between
    # "parses" and "json.loads itself refuses it", in fractions of the limit.
    limit = sys.getrecursionlimit()
    depth = draw(st.one_of(st.sampled_from((0.01, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.5)),
                           st.floats(0.001, 2.0)).map(lambda share: max(1, int(share * limit))))
    key = draw(st.sampled_from(("image", "brand", "category", "offers", "keywords", "name",
                                "@graph", "itemListElement")))
    leaf = draw(st.sampled_from(('"x.jpg"', '{"name": "n", "url": "y.jpg"}', "null",
                                 '{"@type": "Product", "name": "inner"}')))
    opener, closer = draw(st.sampled_from((("[", "]"), ("[", "]"), ('{"item": ', "}"),
                                           ('{"@graph": [', "]}"))))
    return (f'{{"@type": "Product", "name": "Deep", "{key}": '
            f"{opener * depth}{leaf}{closer * depth}}}")


@st.composite
def jsonld_blocks(draw: st.DrawFn) -> str:
    """The text of one ``<script type="application/ld+json">``: valid, truncated, wrapped in
    CDATA or a comment, not JSON at all, or dangerously deep."""
    form = draw(st.sampled_from(("graph", "graph", "json", "json", "raw", "cut", "cdata",
                                 "comment", "text", "deep", "deep")))
    if form == "text":
        return draw(text_values)
    if form == "deep":
        return draw(deep_jsonld())
    if form == "graph":  # the shape most stores serve: breadcrumbs and the product
        data: Any = {"@context": "https://schema.org",
                     "@graph": [draw(breadcrumbs_ld), draw(products_ld)]}
    else:
        data = draw(schema_nodes)
    text = json.dumps(data, allow_nan=True)
    if form != "raw":
        text = text.replace("</", "<\\/")  # as a careful server writes it; "raw" does not
    if form == "cut":
        text = text[:draw(st.integers(0, len(text)))]
    elif form == "cdata":
        text = f"//<![CDATA[\n{text}\n//]]>"
    elif form == "comment":
        text = f"<!--{text}-->"
    return text


OG_KEYS = ("og:title", "og:description", "og:image", "og:image:secure_url", "og:image:url",
           "description", "product:price:amount", "product:price:currency", "og:price:amount",
           "product:category", "product:brand", "og:brand", "product:retailer_item_id")
FRAGMENTS = ("<!DOCTYPE html>", "<html>", "<head>", "</head>", "<body>", "<![ x", "<![if x]>",
             "<![CDATA[", "<!x[y]>", "<!--", "-->", "<?xml version='1.0'?>", "</script>",
             "<script>", "<a b='", "<title>", "</title>", "<svg><title>t</title></svg>",
             "&#x110000;", "&#0;", "<", "</", "<img", "<meta", "\x00", "<style>", "</ p>")


def _attribute(value: str, escape: bool) -> str:
    return f'"{html.escape(value)}"' if escape else f'"{value}"'


@st.composite
def page_parts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(("ld", "ld", "meta", "meta", "title", "img", "base",
                                 "fragment", "text")))
    escape = draw(st.booleans())
    if kind == "ld":
        mime = draw(st.sampled_from(("application/ld+json", "APPLICATION/LD+JSON; charset=x",
                                     "application/json")))
        return f'<script type="{mime}">{draw(jsonld_blocks())}</script>'
    if kind == "meta":
        key = draw(st.one_of(st.sampled_from(OG_KEYS), text_values))
        attribute = draw(st.sampled_from(("property", "name", "PROPERTY")))
        content = draw(text_values)
        return f"<meta {attribute}={_attribute(key, escape)} content={_attribute(content, escape)}>"
    if kind == "title":
        return f"<title>{draw(text_values)}</title>"
    if kind == "img":
        src = draw(text_values)
        width, height = draw(text_values), draw(st.sampled_from(("800", "10", "-5", "1e3", "")))
        return (f"<img src={_attribute(src, escape)} width={_attribute(width, escape)} "
                f"height={_attribute(height, escape)} class={_attribute(draw(text_values), True)}>")
    if kind == "base":
        return f"<base href={_attribute(draw(text_values), escape)}>"
    if kind == "fragment":
        return draw(st.sampled_from(FRAGMENTS))
    return draw(text_values)


pages = st.builds("".join, st.lists(page_parts(), max_size=8))

CHARSETS = ("utf-8", "latin-1", "utf-16", "utf-7", "idna", "punycode", "undefined", "rot13",
            "unicode_escape", "raw_unicode_escape", "uu_codec", "x-unknown", "", "utf\x00-8")


# --- targets ------------------------------------------------------------------------------------

def _page_products(markup: str) -> list[ScrapedProduct]:
    found = result_or_clear_error(lambda: products_from_html(markup, PAGE_URL))
    assert isinstance(found, list), f"a page is data, never an error: {found}"
    assert_sane(found)
    return found


@given(pages)
def test_any_page_gives_sane_products(markup: str) -> None:
    _page_products(markup)


@given(st.lists(jsonld_blocks(), min_size=1, max_size=3), st.sampled_from(("", "<title>T</title>")))
def test_any_jsonld_gives_sane_products(blocks: list[str], head: str) -> None:
    scripts = "".join(f'<script type="application/ld+json">{b}</script>' for b in blocks)
    _page_products(f"<html><head>{head}{scripts}</head></html>")


def _decoded(body: bytes, charset: str | None) -> str:
    page = Fetched(url=PAGE_URL, final_url=PAGE_URL, status=200, content_type="text/html",
                   body=body, charset=charset)
    text = result_or_clear_error(page.text)
    assert isinstance(text, str), f"any bytes decode, never an error: {text}"
    return text


@given(st.one_of(st.binary(max_size=200),
                 st.builds(lambda charset, page: f'<meta charset="{charset}">{page}'.encode(
                     "utf-8", "surrogatepass"), st.sampled_from(CHARSETS), pages)),
       st.one_of(st.none(), st.sampled_from(CHARSETS), st.text(max_size=12)))
def test_any_page_bytes_with_any_charset_decode_and_give_sane_products(
        body: bytes, charset: str | None) -> None:
    _page_products(_decoded(body, charset))


shopify_entries = st.fixed_dictionaries({}, optional={
    "price": sometimes_wrong(prices), "price_currency": sometimes_wrong(st.just("EUR")),
    "src": sometimes_wrong(url_texts)})
shopify_items = st.fixed_dictionaries(
    {"title": sometimes_wrong(names),
     "handle": sometimes_wrong(st.one_of(st.sampled_from(("linen-apron", "a/b", "x?y#z")),
                                         text_values))},
    optional={
        "variants": sometimes_wrong(st.lists(sometimes_wrong(shopify_entries), max_size=3)),
        "images": sometimes_wrong(st.lists(sometimes_wrong(shopify_entries), max_size=3)),
        "image": sometimes_wrong(shopify_entries),
        "body_html": sometimes_wrong(st.one_of(text_values, pages)),
        "product_type": sometimes_wrong(names), "vendor": sometimes_wrong(names),
        "tags": sometimes_wrong(st.one_of(names, st.lists(names, max_size=4))),
    })
shopify_documents = st.one_of(
    json_values,
    st.fixed_dictionaries({"products": sometimes_wrong(st.lists(sometimes_wrong(shopify_items),
                                                                max_size=4))}),
    st.fixed_dictionaries({"product": sometimes_wrong(shopify_items)}),
)


@given(shopify_documents, st.sampled_from(ORIGINS))
def test_any_shopify_document_gives_sane_products(data: Any, origin: str) -> None:
    # What products_from_shopify gets is what json.loads made of the body: round-trip it so
    # the values are exactly those a server can send.
    parsed = json.loads(json.dumps(data, allow_nan=True))
    found = result_or_clear_error(lambda: products_from_shopify(parsed, origin))
    assert isinstance(found, list), f"a document is data, never an error: {found}"
    assert_sane(found)


allow_entries = st.one_of(
    st.text(max_size=40),
    st.builds(lambda host, port: f"{host}:{port}",
              st.sampled_from(("127.0.0.1", "shop.test", "[::1]", "::1", "10.0.0.0/8",
                               "[fd00::/8]", "fd00::/8", "[shop.test]", "", "[", "]")),
              st.one_of(st.integers(-5, 70_000).map(str),
                        st.sampled_from(("", "٣", "８０", "0x50", "+80", " 80", "80 ", "1e3"))),
              ),
)


@given(st.lists(allow_entries, max_size=3))
def test_any_allow_list_is_a_policy_or_a_config_error(entries: list[str]) -> None:
    policy = result_or_clear_error(lambda: FetchPolicy(allow=entries))
    if isinstance(policy, FetchPolicy):
        # Each entry as messages show it names exactly what it was parsed from.
        shown = [str(entry) for entry in policy._allowed]
        assert FetchPolicy(allow=shown)._allowed == policy._allowed, shown
    else:
        assert isinstance(policy, ConfigError) and policy.key == "allow", policy


# --- the saved cases ----------------------------------------------------------------------------

def replay(case: Path) -> None:
    """``*.html``: page bytes, through the charset decoding to the products; ``*.charset``: the
    same, the first line being the ``Content-Type`` charset; ``*.json``: a Shopify document;
    ``*.allow``: one ``allow`` entry (the whole file)."""
    if case.suffix == ".html":
        _page_products(_decoded(case.read_bytes(), None))
    elif case.suffix == ".charset":
        charset, _, body = case.read_bytes().partition(b"\n")
        _page_products(_decoded(body, charset.decode("utf-8")))
    elif case.suffix == ".json":
        found = result_or_clear_error(
            lambda: products_from_shopify(json.loads(case.read_bytes()), ORIGINS[0]))
        assert isinstance(found, list), found
        assert_sane(found)
    elif case.suffix == ".allow":
        result_or_clear_error(lambda: FetchPolicy(allow=[case.read_text("utf-8")]))
    else:
        raise AssertionError(f"{case.name}: no replay for {case.suffix!r} files")


@pytest.mark.parametrize("case", corpus_params("scrape"))
def test_saved_scrape_cases_stay_fixed(case: Path) -> None:
    replay(case)
