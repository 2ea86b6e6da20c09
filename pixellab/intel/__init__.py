"""Product intelligence: turn a store's public pages into product records for a dataset, and
say what each product is.

:mod:`~pixellab.intel.fetch` fetches pages safely (no private addresses, bounded size and time);
:mod:`~pixellab.intel.extract` reads products out of Shopify's JSON endpoints, schema.org
JSON-LD, OpenGraph or plain HTML; :mod:`~pixellab.intel.scrape` imports them as a dataset.
Page text is untrusted data: it is kept verbatim, never interpreted.
:mod:`~pixellab.intel.taxonomy` is what an analysis may answer, :mod:`~pixellab.intel.records`
how answers are kept, :mod:`~pixellab.intel.analyze` how one is run.
"""
