"""How the report shows the evidence: formatted tables, escaped text and image grids.

The notebook stays thin; everything here is tested in the package. The numbers come from
:mod:`pixellab.evidence` (the same frames the CLI and :mod:`pixellab.selection` use); this module
only presents them: styled tables, Markdown-safe text, thumbnails that enlarge on click.
"""

from __future__ import annotations

import functools
import html
import os
import re
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw

from pixellab.errors import InvalidInputImage, PixellabError
from pixellab.media import kind_of_media_type
from pixellab.media.image import zoomable_html
from pixellab.store import Store
from pixellab.validate import decode_image, load_input_image

FORMATS = {"pass_rate": "{:.0%}", "pass_low": "{:.0%}", "pass_high": "{:.0%}",
           "share": "{:.0%}", "mean_score": "{:.3f}", "usd": "${:.4f}",
           "usd_per_request": "${:.4f}", "usd_per_accepted": "${:.4f}",
           "usd_per_second": "${:.4f}", "video_s": "{:.1f} s",
           "usd_estimated": "${:.4f}", "credits": "{:.2f}", "latency_p50_s": "{:.2f} s",
           "latency_p95_s": "{:.2f} s", "score": "{:.3f}", "score_low": "{:.3f}",
           "score_high": "{:.3f}"}


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md(text: object) -> str:
    """``text`` (a category, a product id, a report title: anything a dataset or a user wrote)
    safe inside Markdown: HTML escaped, Markdown punctuation backslash-escaped, one line. A
    category ``kitchen<img onerror=…>`` or ``[x](javascript:…)`` prints as written instead of
    becoming markup in the report."""
    one_line = " ".join(str(text).split())
    return _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(one_line, quote=False))


def styled(table: pd.DataFrame) -> Any:
    """A table as a merchandiser reads it: text left, numbers right, no index, '—' for missing
    (never a zero), money and rates formatted."""
    text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    long = [c for c in text if table[c].astype(str).str.len().max() > 40]
    formats = {c: f for c, f in FORMATS.items() if c in table.columns}
    # escape: pandas' Styler writes cell text as raw HTML by default.
    return (table.style.hide(axis="index").format(formats, na_rep="—", escape="html")
            .set_properties(subset=[c for c in text if c not in long],
                            **{"text-align": "left", "white-space": "nowrap"})
            .set_properties(subset=long, **{"text-align": "left", "white-space": "normal",
                                            "min-width": "14em", "max-width": "30em"})
            .set_table_styles([{"selector": "th", "props": [("text-align", "left")]}]))


# -- images -----------------------------------------------------------------------------------


GRID_CSS = """
<style>
.plx-grid { border-collapse: collapse; font: 12px system-ui, sans-serif; }
.plx-grid { margin: 0; }
/* doubled class: outranks JupyterLab's ":not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td" */
table.plx-grid.plx-grid th, table.plx-grid.plx-grid td {
  padding: 4px; text-align: center; vertical-align: top; }
.plx-grid summary > img, .plx-thumbs summary > img {
  max-width: 200px; max-height: 200px; display: block; margin: auto;
  background: repeating-conic-gradient(#ddd 0% 25%, #fff 0% 50%) 50% / 16px 16px; }
@media (max-width: 700px) {
  .plx-grid summary > img { max-width: 120px; max-height: 120px; } }
.plx-cap { color: #555; max-width: 200px; }
.plx-fail { color: #b00020; max-width: 200px; font-size: 11px; }
.plx-pass { color: #1b7f3b; }
/* Click a thumbnail, see the full image; click again (or Enter) to close. No script: the
   overlay lives inside the <summary> of a <details>, so it works in the static page too. */
details.plx-zoom { display: inline-block; }
details.plx-zoom > summary { list-style: none; cursor: zoom-in; }
details.plx-zoom > summary::-webkit-details-marker { display: none; }
details.plx-zoom .plx-full { display: none; }
details.plx-zoom[open] .plx-full {
  display: flex; position: fixed; inset: 0; z-index: 1000; cursor: zoom-out;
  align-items: center; justify-content: center; flex-direction: column;
  background: rgba(20, 20, 20, 0.88); }
details.plx-zoom[open] .plx-full img {
  max-width: 96vw; max-height: 88vh; width: auto; height: auto;
  background: repeating-conic-gradient(#ccc 0% 25%, #fff 0% 50%) 50% / 20px 20px; }
details.plx-zoom .plx-full span { color: #eee; font: 13px system-ui, sans-serif; margin: 6px; }
/* A clip: its animated preview in the grid; click it and the player opens below it (click
   the preview again to close): inline, so the player's own controls stay usable. */
details.plx-video { display: inline-block; }
details.plx-video > summary { list-style: none; cursor: pointer; }
details.plx-video > summary::-webkit-details-marker { display: none; }
details.plx-video .plx-video-preview { max-width: 200px; max-height: 200px; display: block;
  margin: auto; }
details.plx-video .plx-video-full { display: none; }
details.plx-video[open] .plx-video-full { display: flex; flex-direction: column;
  align-items: center; margin-top: 4px; }
details.plx-video[open] .plx-video-full video,
details.plx-video[open] .plx-video-full img { max-width: 320px; max-height: 480px; }
details.plx-video .plx-video-full span { color: #555; font-size: 11px; max-width: 320px; }
</style>
"""


def image_grid_html(frame: pd.DataFrame, store: Store, *, task: str, category: str,
                    product_images: dict[str, str], max_products: int = 6,
                    by: str = "arm") -> str:
    """Input vs each arm's (or each ``by`` value's, e.g. prompt version's) output, one row per
    product, with the score or the failure; every image enlarges on click."""
    subset = frame[(frame["task"] == task) & (frame["category"] == category)]
    arms = sorted(subset[by].dropna().unique())
    products = sorted(subset["product_id"].unique())[:max_products]
    head = "".join(f"<th>{html.escape(a)}</th>" for a in arms)
    rows = []
    for product_id in products:
        cells = [f"<td><b>{html.escape(product_id)}</b></td>",
                 _image_cell(product_images.get(product_id), None)]
        for arm in arms:
            match = subset[(subset["product_id"] == product_id) & (subset[by] == arm)]
            if match.empty:
                cells.append("<td></td>")
                continue
            row = match.iloc[0]
            cells.append(_output_cell(row, store))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (GRID_CSS + f"<table class='plx-grid'><tr><th>product</th><th>input</th>{head}</tr>"
            + "".join(rows) + "</table>")


def _image_cell(path: str | None, caption: str | None) -> str:
    if not path:
        return "<td>—</td>"
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError as exc:
        return f"<td class='plx-fail'>input unreadable: {html.escape(str(exc))}</td>"
    return _input_cell(path, stamp, caption)


@functools.lru_cache(maxsize=256)
def _input_cell(path: str, stamp: int, caption: str | None) -> str:
    """An input photo's cell, made once per file version: the same photo heads the grids of
    every task of its category, and encoding it is most of a grid's cost."""
    try:
        image = load_input_image(path)
    except InvalidInputImage as exc:
        return f"<td class='plx-fail'>input unreadable: {html.escape(str(exc))}</td>"
    cap = f"<div class='plx-cap'>{html.escape(caption)}</div>" if caption else ""
    return f"<td>{zoomable_html(image, alt='input')}{cap}</td>"


def _output_cell(row: pd.Series, store: Store) -> str:
    if row["status"] != "succeeded" or not isinstance(row["output_sha256"], str):
        message = f"{row['error_class']}: {row['error_message']}"
        return f"<td class='plx-fail'>✗ {html.escape(str(message))}</td>"
    media_type = str(row["media_type"])
    kind = kind_of_media_type(media_type)
    try:
        if kind is None:
            raise PixellabError(f"no media kind shows {media_type}")
        shown = kind.cell_html(store.get(row["output_sha256"], media_type),
                               alt=str(row["arm"]), caption=str(row["product_id"]))
    except (PixellabError, OSError) as exc:
        return (f"<td class='plx-fail'>✗ output unreadable: {html.escape(type(exc).__name__)}: "
                f"{html.escape(str(exc))}</td>")
    score = row["score"]
    verdict = ("<span class='plx-pass'>✓ pass</span>" if row["passed"]
               else "<span class='plx-fail'>✗ gate</span>")
    label = "" if pd.isna(score) else f"score {score:.3g} · "
    return f"<td>{shown}<div class='plx-cap'>{label}{verdict}</div></td>"


def identity_failures_html(failed: pd.DataFrame, store: Store,
                           product_images: dict[str, str], *, max_rows: int = 12) -> str:
    """The outputs whose product did not survive, side by side with their source: the source
    photo, the output with the box where the product was looked for, why it failed, and the
    label text read on each (:func:`pixellab.evidence.identity_failures`)."""
    if failed.empty:
        return "<p>Every output kept its product.</p>"
    rows = []
    for row in failed.head(max_rows).itertuples(index=False):
        source = _image_cell(product_images.get(str(row.product_id)), None)
        try:
            data = store.get(str(row.output_sha256), str(row.media_type))
            kind = kind_of_media_type(str(row.media_type))
            if kind is None or kind.name != "image":
                shown = ("<td>" + (kind.cell_html(data, alt=str(row.arm), caption="")
                                   if kind is not None else "—") + "</td>")
            else:
                shown = f"<td>{_boxed(decode_image(data), row.box, str(row.arm))}</td>"
        except (PixellabError, OSError) as exc:
            shown = f"<td class='plx-fail'>output unreadable: {html.escape(str(exc))}</td>"
        text = ""
        if isinstance(row.source_text, str) or isinstance(row.output_text, str):
            text = (f"<div class='plx-cap'>label on the source: "
                    f"<code>{html.escape(str(row.source_text or '—'))}</code><br>on the output: "
                    f"<code>{html.escape(str(row.output_text or '—'))}</code></div>")
        why = (f"<td class='plx-fail'>✗ {html.escape(str(row.reasons))}"
               f"<div class='plx-cap'>{html.escape(f'{row.task} · {row.arm}')}</div>{text}</td>")
        rows.append(f"<tr><td><b>{html.escape(str(row.product_id))}</b></td>{source}{shown}"
                    f"{why}</tr>")
    more = (f"<p>… and {len(failed) - max_rows} more (the ledger's scores table has them "
            "all).</p>" if len(failed) > max_rows else "")
    return (GRID_CSS + "<table class='plx-grid'><tr><th>product</th><th>source</th>"
            "<th>output (box: where the product was looked for)</th><th>why</th></tr>"
            + "".join(rows) + "</table>" + more)


def _boxed(image: Image.Image, box: object, alt: str) -> str:
    """``image`` with ``box`` (x0, y0, x1, y1) outlined, as a zoomable thumbnail."""
    if isinstance(box, list | tuple) and len(box) == 4:
        image = image.convert("RGB")
        width = max(2, round(max(image.size) / 150))
        ImageDraw.Draw(image).rectangle([int(v) for v in box], outline=(230, 30, 60),
                                        width=width)
    return zoomable_html(image, alt=alt)
