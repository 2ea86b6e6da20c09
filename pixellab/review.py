"""The widgets of the review notebook: browse outputs, compare before/after, rate pairs.

ipywidgets is imported inside the classes, never at module level, so importing pixellab (the
CLI, a sweep in a script) does not need it. Everything a widget shows is computed by plain
methods (:meth:`OutputGrid.html`, :meth:`BeforeAfter.compose`, :meth:`PairRater.press`), so the
behaviour is tested without a browser; the widgets only wire those methods to controls.

Each class keeps its widget tree in ``.widget`` and displays as that widget, so a notebook cell
can end with the object itself.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw

from pixellab import ratings
from pixellab.errors import ConfigError
from pixellab.evidence import failure_reason
from pixellab.ledger import Ledger
from pixellab.media import kind_of_media_type
from pixellab.media.image import thumbnail_data_uri
from pixellab.media.video import EMBED_MAX_BYTES, sample_frames
from pixellab.ratings import Pair
from pixellab.store import Store
from pixellab.validate import decode_image, load_input_image

ALL = "all"

_CSS = """
<style>
.plx-tiles { display: flex; flex-wrap: wrap; gap: 8px; font: 12px system-ui, sans-serif; }
.plx-tile { width: 170px; text-align: center; }
.plx-tile img, .plx-pair img { display: block; margin: auto;
  background: repeating-conic-gradient(#ddd 0% 25%, #fff 0% 50%) 50% / 16px 16px; }
.plx-tile img { max-width: 160px; max-height: 160px; }
.plx-nothing { width: 160px; height: 100px; margin: auto; background: #f6f6f6; color: #b00020;
  display: flex; align-items: center; justify-content: center; font-size: 28px; }
.plx-cap { color: #444; overflow-wrap: anywhere; }
.plx-ok { color: #1b7f3b; }
.plx-bad { color: #b00020; }
.plx-pair { display: flex; gap: 24px; font: 13px system-ui, sans-serif; }
.plx-pair figure { margin: 0; text-align: center; }
.plx-pair img { max-width: 400px; max-height: 400px; }
</style>
"""


class _Displayable:
    """Display as ``self.widget``: ``display(obj)`` or a cell ending in ``obj`` shows it."""

    widget: Any

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _is_video(media_type: str) -> bool:
    kind = kind_of_media_type(media_type)
    return kind is not None and kind.name == "video"


def _output_image(store: Store, digest: str, media_type: str) -> Image.Image:
    """The output as a picture: the image itself, or a clip's first frame (what the grid and
    the before/after slider show of it)."""
    data = store.get(digest, media_type)
    if _is_video(media_type):
        return Image.fromarray(sample_frames(data, count=1).frames[0])
    return decode_image(data)


def _clip_html(data: bytes, media_type: str, px: int) -> str:
    """A clip to rate: playing on its own, muted and looped, so two play side by side; one
    over :data:`~pixellab.media.video.EMBED_MAX_BYTES` shows its first frame instead."""
    if len(data) > EMBED_MAX_BYTES:
        poster = thumbnail_data_uri(Image.fromarray(sample_frames(data, count=1).frames[0]),
                                    px)
        return (f"<img src='{poster}' alt='output'><div class='plx-cap'>first frame: the clip "
                "is too large to play here</div>")
    uri = f"data:{media_type};base64,{base64.b64encode(data).decode()}"
    return (f"<video autoplay muted loop playsinline controls style='max-width:{px}px;"
            f"max-height:{px}px'><source src='{uri}' type='{html.escape(media_type)}'>"
            "</video>")


# -- the grid ---------------------------------------------------------------------------------


class OutputGrid(_Displayable):
    """Every output as a thumbnail, filtered by category, task, model and pass/fail.

    Shows at most ``max_items`` tiles (decoding hundreds of images would stall the notebook)
    and says how many matched, so a filter is the way to the rest.
    """

    def __init__(self, frame: pd.DataFrame, store: Store, *, max_items: int = 60,
                 thumbnail_px: int = 160) -> None:
        import ipywidgets as widgets

        self.frame = frame
        self.store = store
        self.max_items = max_items
        self.thumbnail_px = thumbnail_px
        self._thumbs: dict[str, str] = {}

        def options(column: str) -> list[str]:
            values = frame[column].dropna().unique() if column in frame else []
            return [ALL, *sorted(str(v) for v in values)]

        self.category = widgets.Dropdown(options=options("category"), value=ALL,
                                         description="category")
        self.task = widgets.Dropdown(options=options("task"), value=ALL, description="task")
        self.model = widgets.Dropdown(options=options("arm"), value=ALL, description="model")
        self.result = widgets.Dropdown(options=[ALL, "passed", "failed"], value=ALL,
                                       description="result")
        self.output = widgets.HTML()
        for control in (self.category, self.task, self.model, self.result):
            control.observe(lambda _change: self.refresh(), names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.category, self.task]), widgets.HBox([self.model, self.result]),
            self.output])
        self.refresh()

    def filtered(self) -> pd.DataFrame:
        """The rows the dropdowns select, in the frame's order."""
        frame = self.frame
        if frame.empty:
            return frame
        keep = pd.Series(True, index=frame.index)
        for column, control in (("category", self.category), ("task", self.task),
                                ("arm", self.model)):
            if control.value != ALL:
                keep &= frame[column].astype(str) == control.value
        if self.result.value == "passed":
            keep &= frame["passed"].astype(bool)
        elif self.result.value == "failed":
            keep &= ~frame["passed"].astype(bool)
        return frame[keep]

    def html(self) -> str:
        """The tiles of the current selection, with a "showing N of M" line."""
        rows = self.filtered()
        shown = rows.head(self.max_items)
        tiles = [self._tile(row) for _, row in shown.iterrows()]
        line = f"showing {len(shown)} of {len(rows)}"
        if len(rows) > len(shown):
            line += " (narrow the filters to see the rest)"
        if rows.empty:
            line += " — nothing matches these filters" if not self.frame.empty else \
                " — no outputs in the ledger yet"
        return (_CSS + f"<p>{html.escape(line)}</p><div class='plx-tiles'>"
                + "".join(tiles) + "</div>")

    def refresh(self) -> None:
        self.output.value = self.html()

    def _thumbnail(self, digest: str, media_type: str) -> str:
        if digest not in self._thumbs:
            image = _output_image(self.store, digest, media_type)
            self._thumbs[digest] = thumbnail_data_uri(image, self.thumbnail_px)
        return self._thumbs[digest]

    def _tile(self, row: pd.Series) -> str:
        reason = failure_reason(row)
        picture = "<div class='plx-nothing'>✗</div>"
        if row["status"] == "succeeded" and isinstance(row["output_sha256"], str):
            try:
                uri = self._thumbnail(row["output_sha256"], str(row["media_type"]))
                picture = f"<img src='{uri}' alt='output'>"
            except Exception as exc:  # a missing store file must not hide the other tiles
                reason = f"cannot show the output: {exc}"
        score = row.get("score")
        parts = [str(row["product_id"]), str(row["arm"])]
        if score is not None and not pd.isna(score):
            parts.append(f"score {float(score):.3g}")
        verdict = ("<span class='plx-ok'>✓</span>" if bool(row["passed"])
                   else "<span class='plx-bad'>✗</span>")
        why = f"<div class='plx-bad'>{html.escape(reason)}</div>" if reason else ""
        return (f"<div class='plx-tile'>{picture}<div class='plx-cap'>"
                f"{html.escape(' · '.join(parts))} {verdict}</div>{why}</div>")


# -- before / after ---------------------------------------------------------------------------


def checkerboard(size: tuple[int, int], square: int = 16) -> Image.Image:
    """Grey and white squares: where an output is transparent, this shows through."""
    board = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(board)
    for y in range(0, size[1], square):
        for x in range((y // square) % 2 * square, size[0], 2 * square):
            draw.rectangle([x, y, x + square - 1, y + square - 1], fill=(221, 221, 221))
    return board


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` scaled to fit ``size`` and centred on a checkerboard of exactly ``size``."""
    image = image.convert("RGBA")
    scale = min(size[0] / image.width, size[1] / image.height)
    scaled = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                          Image.Resampling.LANCZOS)
    canvas = checkerboard(size).convert("RGBA")
    canvas.alpha_composite(scaled, ((size[0] - scaled.width) // 2,
                                    (size[1] - scaled.height) // 2))
    return canvas.convert("RGB")


def compose_before_after(before: Image.Image, after: Image.Image, split: int, *,
                         max_side: int = 512, divider_px: int = 2) -> Image.Image:
    """One image: the source photo left of the divider, the output right of it.

    ``split`` is the divider's position in percent of the width (0: all output, 100: all
    source). Both are scaled to the same box (the source's shape, ``max_side`` on its long side)
    so the eye compares the same pixels; transparency shows as a checkerboard.
    """
    scale = min(1.0, max_side / max(before.size))
    size = (max(1, round(before.width * scale)), max(1, round(before.height * scale)))
    left, right = _fit(before, size), _fit(after, size)
    x = round(size[0] * min(max(split, 0), 100) / 100)
    canvas = right.copy()
    if x > 0:
        canvas.paste(left.crop((0, 0, x, size[1])), (0, 0))
    if 0 < x < size[0]:
        ImageDraw.Draw(canvas).rectangle(
            [max(0, x - divider_px // 2), 0, min(size[0] - 1, x + (divider_px - 1) // 2),
             size[1] - 1], fill=(255, 255, 255))
    return canvas


class BeforeAfter(_Displayable):
    """Source photo and one arm's output for one product, with a slider moving the divider."""

    def __init__(self, frame: pd.DataFrame, store: Store, product_images: dict[str, str], *,
                 max_side: int = 512) -> None:
        import ipywidgets as widgets

        self.store = store
        self.max_side = max_side
        self.product_images = product_images
        ok = frame[(frame["status"] == "succeeded") & frame["output_sha256"].notna()] \
            if not frame.empty else frame
        self.outputs = ok[ok["product_id"].isin(list(product_images))] if not ok.empty else ok
        self._many_tasks = not ok.empty and ok["task"].nunique() > 1
        products = sorted(self.outputs["product_id"].unique()) if not ok.empty else []
        self._sources: dict[str, Image.Image] = {}
        self._results: dict[str, Image.Image] = {}
        self.product = widgets.Dropdown(options=products, description="product")
        self.arm = widgets.Dropdown(options=[], description="model")
        self.slider = widgets.IntSlider(value=50, min=0, max=100, step=1,
                                        description="before ◀▶ after", continuous_update=True,
                                        style={"description_width": "initial"})
        self.image = widgets.Image(format="png")
        self.message = widgets.HTML()
        self.product.observe(lambda _change: self._choose_product(), names="value")
        self.arm.observe(lambda _change: self.refresh(), names="value")
        self.slider.observe(lambda _change: self.refresh(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.product, self.arm]), self.slider,
                                    self.message, self.image])
        if not products:
            self.message.value = ("<p>No product has both a source photo and an output yet: "
                                  "nothing to compare.</p>")
        self._choose_product()

    def _choose_product(self) -> None:
        rows = self.outputs[self.outputs["product_id"] == self.product.value] \
            if self.product.value is not None else self.outputs.iloc[0:0]
        options = []
        for row in rows.drop_duplicates(["task", "arm"]).itertuples(index=False):
            label = f"{row.arm} ({row.task})" if self._many_tasks else str(row.arm)
            options.append((label, (str(row.output_sha256), str(row.media_type))))
        self.arm.options = options
        self.arm.value = options[0][1] if options else None
        self.refresh()

    def compose(self) -> Image.Image | None:
        """The picture for the current product, model and slider; None if nothing is chosen."""
        if self.product.value is None or self.arm.value is None:
            return None
        product_id: str = self.product.value
        digest, media_type = self.arm.value
        if product_id not in self._sources:
            self._sources[product_id] = load_input_image(self.product_images[product_id])
        if digest not in self._results:
            self._results[digest] = _output_image(self.store, digest, media_type)
        return compose_before_after(self._sources[product_id], self._results[digest],
                                    self.slider.value, max_side=self.max_side)

    def refresh(self) -> None:
        try:
            picture = self.compose()
        except Exception as exc:  # a missing file is a message, not a dead widget
            self.message.value = f"<p class='plx-bad'>Cannot show this: {html.escape(str(exc))}</p>"
            return
        if picture is None:
            return
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        self.image.value = buffer.getvalue()
        self.message.value = ("<p>Left of the line: the original photo. Right of it: the "
                              "model's output. Drag the slider to move the line.</p>")


# -- pairwise rating ------------------------------------------------------------------------

_VOTES = {"a": "a", "1": "a", "b": "b", "2": "b", "t": "tie", "=": "tie"}
_SAID = {"a": "left is better", "b": "right is better", "tie": "tie"}
KEY_HELP = "type a, b, t, s or u"


class PairRater(_Displayable):
    """Blind A/B rating of ``pairs``, one keystroke per vote, each vote stored at once.

    Keys (typed into the ``keys`` field, which the rater clicks once): ``a``/``1`` left is
    better, ``b``/``2`` right is better, ``t``/``=`` tie, ``s`` skip (nothing stored), ``u``
    undo the last vote of this session (deleted from the ledger, and its pair comes back).
    The arms stay hidden until after the vote, so a favourite model's name cannot sway it; the
    status line then reveals which arm was which.
    """

    def __init__(self, ledger: Ledger, store: Store, pairs: Sequence[Pair], *, rater: str,
                 image_px: int = 400) -> None:
        import ipywidgets as widgets

        if not rater or not rater.strip():
            raise ConfigError("say who is rating: a rater name is required", key="rater")
        self.ledger = ledger
        self.store = store
        self.pairs = list(pairs)
        self.rater = rater.strip()
        self.image_px = image_px
        self.index = 0
        self.history: list[tuple[int, str]] = []
        """(pair index, rating_id) of this session's stored votes, newest last: what ``u``
        undoes."""
        self._images: dict[str, str] = {}
        self.header = widgets.HTML()
        self.view = widgets.HTML()
        self.status = widgets.HTML()
        self.keys = widgets.Text(value="", placeholder=KEY_HELP, continuous_update=True,
                                 description="keys")
        self._seen = ""
        """The last text the browser sent in ``keys``: what has been taken already."""
        self.keys.observe(self._typed, names="value")
        buttons = []
        for label, key, tip in (("A: left better", "a", "key a or 1"), ("Tie", "t", "key t or ="),
                                ("B: right better", "b", "key b or 2"), ("Skip", "s", "key s"),
                                ("Undo", "u", "key u")):
            button = widgets.Button(description=label, tooltip=tip)
            button.on_click(lambda _b, key=key: self.press(key))
            buttons.append(button)
        self.buttons = widgets.HBox(buttons)
        self.widget = widgets.VBox([self.header, self.view, self.keys, self.buttons,
                                    self.status])
        self._say("Click the keys field once, then " + KEY_HELP + "." if self.pairs else
                  "Nothing to rate: no product has two different outputs that you have not "
                  "rated yet.")
        self._render()

    # -- state --------------------------------------------------------------------------------

    @property
    def current(self) -> Pair | None:
        return self.pairs[self.index] if self.index < len(self.pairs) else None

    @property
    def rated_count(self) -> int:
        """How many ratings this rater has in the ledger (all sessions), read from the ledger."""
        return ratings.count(self.ledger, self.rater)

    def progress(self) -> str:
        if not self.pairs:
            return "no pairs to rate"
        if self.current is None:
            return f"all {len(self.pairs)} pairs done"
        return f"pair {self.index + 1} of {len(self.pairs)}"

    # -- keys -------------------------------------------------------------------------------

    def press(self, key: str) -> str:
        """Handle one key and return the status message; never raises for a bad key."""
        key = key.strip().lower()
        if not key:
            return ""
        if not self.pairs and key != "u":
            message = "Nothing to rate here (no pairs left for you)."
        elif key in _VOTES:
            message = self._vote(_VOTES[key])
        elif key == "s":
            message = self._skip()
        elif key == "u":
            message = self._undo()
        else:
            message = f"{key!r} is not a key here: {KEY_HELP}."
        self._say(message)
        self._render()
        return message

    def _typed(self, change: dict[str, Any]) -> None:
        """Observer of ``keys``: every character typed is one key, taken exactly once.

        The field keeps what was typed (a visible log of the session's keys), and only what
        extends the text the browser sent last is a key: ``"ab"`` after ``"a"`` is one ``b``.
        Why not clear the field after each key: in a real JupyterLab a value the kernel sets
        while it handles the browser's update does not reach the input, so the browser sends
        the whole text again with the next key, and a cleared-then-retyped field could not be
        told from a resent one (seen in tests/test_review.py, typed by Playwright). A shorter
        text (backspace, or the field emptied) is no key; any other text (the field's content
        replaced) counts in full.
        """
        text = str(change["new"])
        seen, self._seen = self._seen, text
        if text.startswith(seen) and len(text) > len(seen):
            fresh = text[len(seen):]
        elif seen.startswith(text):
            fresh = ""  # a deletion, not a key
        else:
            fresh = text
        for char in fresh:
            self.press(char)

    def _vote(self, winner: str) -> str:
        pair = self.current
        if pair is None:
            return "All pairs are done; press u to undo the last vote."
        try:
            rating_id = ratings.record(self.ledger, pair, winner, self.rater)
        except Exception as exc:  # the vote is not lost silently: say so and stay on the pair
            return f"Not saved ({exc}); press the key again."
        self.history.append((self.index, rating_id))
        self.index += 1
        return (f"Saved: {_SAID[winner]} for {pair.product_id}. "
                f"Left was {pair.left.arm}, right was {pair.right.arm}.")

    def _skip(self) -> str:
        pair = self.current
        if pair is None:
            return "All pairs are done; nothing to skip."
        self.index += 1
        return f"Skipped {pair.product_id}; nothing stored."

    def _undo(self) -> str:
        if not self.history:
            return "Nothing to undo in this session."
        index, rating_id = self.history[-1]
        try:
            ratings.delete(self.ledger, rating_id)
        except Exception as exc:
            return f"Undo failed ({exc}); press u again."
        self.history.pop()
        self.index = index
        return f"Undone: the vote on {self.pairs[index].product_id} is deleted; rate it again."

    # -- drawing ----------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        self.status.value = f"<p>{html.escape(message)}</p>"

    def _picture(self, digest: str, media_type: str) -> str:
        if digest not in self._images:
            try:
                if _is_video(media_type):
                    self._images[digest] = _clip_html(self.store.get(digest, media_type),
                                                      media_type, self.image_px)
                    return self._images[digest]
                image = _output_image(self.store, digest, media_type)
                self._images[digest] = (f"<img src='{thumbnail_data_uri(image, self.image_px)}'"
                                        " alt='output'>")
            except Exception as exc:
                why = html.escape(str(exc))
                return f"<div class='plx-bad'>cannot show this output: {why}</div>"
        return self._images[digest]

    def _render(self) -> None:
        pair = self.current
        done = f" · {self.rated_count} rated by {self.rater} so far"
        self.header.value = f"<b>{html.escape(self.progress())}</b>{html.escape(done)}"
        if pair is None:
            self.view.value = ("<p>That was the last pair. Thank you! Run the next cell to see "
                               "your ratings.</p>" if self.pairs else "")
            return
        what = f"{pair.product_id} · {pair.category} · {pair.task}"
        self.view.value = (
            _CSS + f"<p>{html.escape(what)} — which output would you rather show a shopper?</p>"
            "<div class='plx-pair'>"
            f"<figure>{self._picture(pair.left.output_sha256, pair.left.media_type)}"
            "<figcaption><b>A</b> (left)</figcaption></figure>"
            f"<figure>{self._picture(pair.right.output_sha256, pair.right.media_type)}"
            "<figcaption><b>B</b> (right)</figcaption></figure></div>")
