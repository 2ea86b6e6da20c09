"""Product intelligence: turn a store's public pages into product records for a dataset.

:mod:`pixellab.intel.scrape` fetches pages safely (no private addresses, bounded size and time)
and extracts products from Shopify's JSON endpoints, schema.org JSON-LD, OpenGraph or plain HTML.
Page text is untrusted data: it is kept verbatim, never interpreted.
"""
