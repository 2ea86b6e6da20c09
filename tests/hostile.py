"""A hostile product dataset: one product per kind of bad item, a few good controls, and
sentinel files beside the dataset that nothing may read (issue P8, "hostile inputs, safely").

:func:`write_hostile_dataset` builds it; :class:`HostileDataset` says, per product id, what kind
of item it is and how it must end: failed with a given ``error_reason`` (``InvalidInputImage``),
succeeded (the controls, and good products with odd text or odd file names), or any outcome
that has a reason when it failed (odd-but-valid images: 16-bit, CMYK, palette with tRNS, …).

The sentinels live in ``outside``, a folder that is not inside the dataset. Name it so that its
path starts with the dataset folder's path (``<root>-outside``): a containment check written as
``str(path).startswith(str(root))`` then wrongly lets it in, which is the point.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, PngImagePlugin

from tests.conftest import bomb_png, product_photo

Outcome = Literal["fail", "succeed", "any"]

BLANK = "blank_input"
OUTSIDE = "outside_dataset"
HUGE_FILE_BYTES = 60 * 1024 * 1024
"""The oversized file's length: over the 50 MiB input cap, made sparse (it costs no disk)."""

SIZE = (160, 120)
"""Good photos are small: four sweeps over ~55 products stay quick on two cores."""


@dataclass(frozen=True)
class HostileItem:
    """One product of the hostile dataset and how its request must end."""

    product_id: str
    kind: str
    expected: str | None
    """The ``error_reason`` its request must fail with; None: it need not fail."""
    outcome: Outcome
    """``fail``: failed with a reason in :attr:`reasons`; ``succeed``: succeeded; ``any``:
    succeeded, or failed with a non-empty reason."""
    alternatives: tuple[str, ...] = ()
    """Other reasons accepted where more than one is honest (a dangling link that points
    outside is both ``outside_dataset`` and ``missing``)."""
    image: str = ""
    mask: str = ""
    reference: str = ""
    row: int = 0
    """The product's row in manifest.csv (the header is row 1)."""

    @property
    def reasons(self) -> frozenset[str]:
        """Every reason a failure of this item may carry; empty means any non-empty reason."""
        return frozenset(r for r in (self.expected, *self.alternatives) if r)

    @property
    def files(self) -> tuple[str, ...]:
        """The manifest's paths for this product (image, mask, reference), as written there."""
        return tuple(p for p in (self.image, self.mask, self.reference) if p)


@dataclass
class HostileDataset:
    root: Path
    outside: Path
    items: dict[str, HostileItem]
    sentinels: list[Path]
    """Files under ``outside`` whose content must never be read, shown or stored."""
    markers: tuple[str, ...]
    """Strings only the sentinels contain: none may appear in a message, a ledger cell, a
    stored output or the report."""
    outside_photo_sha256: str
    huge_file: Path
    """The sparse file over the byte cap: it must be refused from its size, never opened."""
    shared_inode: Path | None = None
    """The sentinel that a hard link inside the dataset shares (reading the link reads it, so
    access-time checks leave it out)."""
    notes: list[str] = field(default_factory=list)

    def of_outcome(self, outcome: Outcome) -> list[HostileItem]:
        return [i for i in self.items.values() if i.outcome == outcome]

    @property
    def kinds(self) -> dict[str, str]:
        return {pid: item.kind for pid, item in self.items.items()}

    @property
    def expected_reasons(self) -> dict[str, str | None]:
        return {pid: item.expected for pid, item in self.items.items()}


# -- bytes of bad and odd files ------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunks(png: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of each chunk of a PNG."""
    found, offset = [], 8
    while offset + 8 <= len(png):
        (length,) = struct.unpack(">I", png[offset:offset + 4])
        found.append((offset, png[offset + 4:offset + 8]))
        offset += 12 + length
    return found


def _png_with_garbage_idat(good: bytes, seed: int) -> bytes:
    """A PNG whose header and chunk CRCs are valid but whose IDAT holds random bytes (the zlib
    stream cannot be inflated)."""
    data = bytearray(good)
    offset = next(o for o, kind in _chunks(good) if kind == b"IDAT")
    (length,) = struct.unpack(">I", data[offset:offset + 4])
    garbage = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    garbage = b"\x00\x00" + garbage[2:]  # not even a zlib header
    data[offset + 8:offset + 8 + length] = garbage
    crc = zlib.crc32(b"IDAT" + garbage)
    data[offset + 8 + length:offset + 12 + length] = crc.to_bytes(4, "big")
    return bytes(data)


def _png_with_bad_crc(good: bytes, chunk: bytes) -> bytes:
    """``good`` with the CRC of its first ``chunk`` flipped."""
    data = bytearray(good)
    offset = next(o for o, kind in _chunks(good) if kind == chunk)
    (length,) = struct.unpack(">I", data[offset:offset + 4])
    data[offset + 8 + length] ^= 0xFF
    return bytes(data)


def _jpeg_declaring(good_jpeg: bytes, width: int, height: int) -> bytes:
    """A small JPEG whose SOF header declares ``width`` × ``height``."""
    data = bytearray(good_jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = data.find(marker)
        if at != -1:
            data[at + 5:at + 7] = height.to_bytes(2, "big")
            data[at + 7:at + 9] = width.to_bytes(2, "big")
            return bytes(data)
    raise AssertionError("no SOF marker in the JPEG")


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _uniform(mode: str, colour: object, size: tuple[int, int] = SIZE) -> Image.Image:
    return Image.new(mode, size, colour)  # type: ignore[arg-type]


def _nearly_transparent(seed: int, size: tuple[int, int] = (200, 100)) -> Image.Image:
    """Noise under an alpha that shows 0.1 % of the pixels (under the 0.5 % blank threshold)."""
    rng = np.random.default_rng(seed)
    w, h = size
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (h, w, 3))
    visible = rng.choice(w * h, size=max(1, w * h // 1000), replace=False)
    rgba.reshape(-1, 4)[visible, 3] = 255
    return Image.fromarray(rgba, "RGBA")


def _transparent(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgba = np.zeros((SIZE[1], SIZE[0], 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (SIZE[1], SIZE[0], 3))
    return Image.fromarray(rgba, "RGBA")


def _sixteen_bit(seed: int) -> Image.Image:
    photo, _ = product_photo(seed, SIZE)
    grey = np.asarray(photo.convert("L"), np.uint16) * 257
    return Image.fromarray(grey.astype(np.uint16))  # mode I;16


def _sliver(height: int = 5000) -> Image.Image:
    column = np.linspace(20, 235, height).astype(np.uint8)
    rgb = np.stack([column, column[::-1], np.full(height, 128, np.uint8)], axis=-1)
    return Image.fromarray(rgb[:, None, :], "RGB")


def _animated_gif(seed: int) -> bytes:
    frames = [product_photo(seed + i, SIZE)[0].convert("P") for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=80,
                   loop=0)
    return buffer.getvalue()


# -- the dataset ---------------------------------------------------------------------------------


def write_hostile_dataset(root: Path, outside: Path) -> HostileDataset:
    """Build the hostile dataset under ``root`` and its sentinels under ``outside``.

    ``outside`` must not lie inside ``root``; a sibling named ``<root>-outside`` is best (see the
    module's docstring). Every product gets distinct image bytes, so no two products share a
    request key by accident. Products whose file names or ids carry markup, unicode or
    ``../`` are good images and must succeed.
    """
    root, outside = Path(root).absolute(), Path(outside).absolute()
    if outside.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{outside} lies inside the dataset {root}")
    images, masks, refs = root / "images", root / "masks", root / "refs"
    for folder in (images, masks, refs, outside):
        folder.mkdir(parents=True, exist_ok=True)

    token = uuid.uuid4().hex[:12]
    marker = f"SENTINEL-{token}"
    passwd = outside / "passwd"
    passwd.write_text(f"root:x:0:0:{marker}-passwd:/root:/bin/bash\n"
                      f"daemon:x:1:1:{marker}-daemon:/usr/sbin:/usr/sbin/nologin\n")
    hostname = outside / "hostname"
    hostname.write_text(f"{marker}-hostname.internal\n")
    shadow = outside / "shadow"
    shadow.write_text(f"root:x:0:0:{marker}-shadow:$6$salt$hash:19000:0:99999:7:::\n")
    photo_info = PngImagePlugin.PngInfo()
    photo_info.add_text("Comment", f"{marker}-photo")
    outside_photo = outside / "photo.png"
    outside_photo.write_bytes(_encode(product_photo(900, SIZE)[0], "PNG", pnginfo=photo_info))
    mask_info = PngImagePlugin.PngInfo()
    mask_info.add_text("Comment", f"{marker}-mask")
    outside_mask = outside / "mask.png"
    outside_mask.write_bytes(_encode(product_photo(900, SIZE)[1], "PNG", pnginfo=mask_info))
    sentinels = [passwd, hostname, shadow, outside_photo, outside_mask]

    def rel_outside(target: Path, via: str = "images/") -> str:
        """``target`` as a manifest path that climbs out of the dataset through ``via``."""
        return via + os.path.relpath(target, root / via)

    rows: list[dict[str, str]] = []
    items: dict[str, HostileItem] = {}
    notes: list[str] = []
    seed = iter(range(1, 10_000))

    def add(pid: str, kind: str, expected: str | None, *, image: str, outcome: Outcome = "fail",
            alternatives: tuple[str, ...] = (), mask: str = "", reference: str = "",
            title: str | None = None, category: str = "kitchen", description: str = "") -> None:
        assert pid not in items, pid
        rows.append({"id": pid, "title": title if title is not None else kind,
                     "description": description or f"Hostile item: {kind}.",
                     "category": category, "image": image, "mask": mask,
                     "reference": reference})
        items[pid] = HostileItem(pid, kind, expected, outcome, alternatives, image, mask,
                                 reference, row=len(rows) + 1)

    def write(name: str, data: bytes) -> str:
        (images / name).write_bytes(data)
        return f"images/{name}"

    def good_png(name: str, *, size: tuple[int, int] = SIZE) -> tuple[str, Image.Image]:
        photo, _ = product_photo(next(seed), size)
        return write(name, _encode(photo, "PNG")), photo

    # -- good controls: a photo, its exact mask and a clean reference ----------------------------
    for n, category in enumerate(("kitchen", "kitchen", "jewelry")):
        photo, mask = product_photo(next(seed), SIZE)
        pid = f"good-{n}"
        photo.save(images / f"{pid}.png")
        mask.save(masks / f"{pid}.png")
        photo.save(refs / f"{pid}.png")
        add(pid, "good control", None, outcome="succeed", image=f"images/{pid}.png",
            mask=f"masks/{pid}.png", reference=f"refs/{pid}.png", title=f"Good product {n}",
            category=category)

    # -- files that are not there, or not files --------------------------------------------------
    add("zero-bytes", "zero-byte file", "zero_bytes", image=write("zero.png", b""))
    add("missing", "missing file", "missing", image="images/does-not-exist.png")
    (images / "folder.png").mkdir()
    (images / "folder.png" / "inside.png").write_bytes(_encode(_uniform("RGB", "red"), "PNG"))
    add("directory", "directory named like an image", "unreadable", image="images/folder.png")
    os.symlink("loop.png", images / "loop.png")
    add("symlink-loop", "symlink pointing at itself", "unreadable",
        alternatives=("missing", OUTSIDE), image="images/loop.png")
    os.symlink("nothing-here.png", images / "dangling.png")
    add("dangling-inside", "dangling symlink inside the dataset", "missing",
        image="images/dangling.png")
    add("name-too-long", "file name over 255 bytes", "unreadable", alternatives=("missing",),
        image="images/" + "n" * 300 + ".png")
    add("nul-in-path", "NUL byte in the manifest path", "unreadable", alternatives=("missing",),
        image="images/nul\x00.png")

    # -- sizes ----------------------------------------------------------------------------------
    add("png-bomb", "PNG declaring 50000x50000 (decompression bomb)", "too_large",
        image=write("bomb.png", bomb_png()))
    small_jpeg = _encode(product_photo(next(seed), SIZE)[0], "JPEG", quality=85)
    add("jpeg-huge", "JPEG declaring 60000x60000", "too_large",
        image=write("huge-declared.jpg", _jpeg_declaring(small_jpeg, 60_000, 60_000)))
    huge = images / "huge.png"
    with open(huge, "wb") as sparse:  # a PNG signature, then a hole
        sparse.write(b"\x89PNG\r\n\x1a\n")
        sparse.truncate(HUGE_FILE_BYTES)
    add("over-50-mib", "file over 50 MiB (sparse)", "too_many_bytes", image="images/huge.png")

    # -- truncated and corrupt -------------------------------------------------------------------
    png = _encode(product_photo(next(seed), SIZE)[0], "PNG")
    add("png-truncated", "truncated PNG", "truncated", image=write("cut.png", png[:len(png) // 2]))
    jpeg = _encode(product_photo(next(seed), SIZE)[0], "JPEG", quality=90)
    add("jpeg-truncated", "truncated JPEG", "truncated",
        image=write("cut.jpg", jpeg[:len(jpeg) // 2]))
    webp = _encode(product_photo(next(seed), SIZE)[0], "WEBP", quality=80)
    add("webp-truncated", "truncated WEBP", "truncated",
        image=write("cut.webp", webp[:len(webp) // 2]))
    png = _encode(product_photo(next(seed), SIZE)[0], "PNG")
    add("png-bad-ihdr-crc", "PNG with a corrupt IHDR CRC", "undecodable",
        image=write("bad-crc.png", _png_with_bad_crc(png, b"IHDR")))
    png = _encode(product_photo(next(seed), SIZE)[0], "PNG")
    add("png-garbage-idat", "PNG with a valid header and garbage pixel data", "undecodable",
        image=write("garbage-idat.png", _png_with_garbage_idat(png, 7)))
    png = _encode(product_photo(next(seed), SIZE)[0], "PNG")
    add("png-bad-idat-crc", "PNG with a corrupt IDAT CRC (pixels intact)", None, outcome="any",
        image=write("bad-idat-crc.png", _png_with_bad_crc(png, b"IDAT")))
    add("png-magic-html", "PNG signature followed by HTML", "undecodable",
        alternatives=("truncated", "unsupported_format"),
        image=write("magic.png", b"\x89PNG\r\n\x1a\n<html><body><script>alert(1)</script>"
                                 b"</body></html>\n"))
    png = _encode(product_photo(next(seed), SIZE)[0], "PNG")
    add("polyglot-png-html", "valid PNG with an HTML page after IEND (polyglot)", None,
        outcome="any", image=write("polyglot.png", png + b"<html><script>alert(document."
                                                         b"cookie)</script></html>"))

    # -- not images, or not an allowed format ----------------------------------------------------
    add("text-as-png", "text file named .png", "unsupported_format",
        image=write("notes.png", b"just some notes, not a picture\n"))
    add("html-as-jpg", "HTML named .jpg", "unsupported_format",
        image=write("page.jpg", b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)>"
                                b"</body></html>"))
    add("json-as-png", "JSON named .png", "unsupported_format",
        image=write("data.png", b'{"image": "../../etc/passwd", "width": 1}'))
    add("svg", "SVG", "unsupported_format",
        image=write("vector.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" '
                                  b'height="10"><image href="file:///etc/passwd"/></svg>'))
    photo = product_photo(next(seed), SIZE)[0]
    add("tiff", "TIFF", "unsupported_format", image=write("photo.tiff", _encode(photo, "TIFF")))
    photo = product_photo(next(seed), SIZE)[0]
    add("gif", "GIF", "unsupported_format", image=write("photo.gif", _encode(photo, "GIF")))
    add("animated-gif", "animated GIF", "unsupported_format",
        image=write("anim.gif", _animated_gif(next(seed))))
    photo = product_photo(next(seed), SIZE)[0]
    add("bmp", "BMP", "unsupported_format", image=write("photo.bmp", _encode(photo, "BMP")))
    photo = product_photo(next(seed), (64, 64))[0]
    add("ico", "ICO", "unsupported_format", image=write("favicon.ico", _encode(photo, "ICO")))
    add("pdf", "PDF", "unsupported_format",
        image=write("sheet.pdf", b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<<>>\n%%EOF\n"))
    add("eps", "EPS header (Ghostscript must never see it)", "unsupported_format",
        image=write("art.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
                               b"(/etc/passwd) (r) file\nshowpage\n"))
    add("heic", "HEIC (ftyp heic)", "unsupported_format",
        image=write("photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
                                  + b"\x00" * 64))
    add("avif", "AVIF (ftyp avif)", "unsupported_format",
        image=write("photo.avif", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf"
                                  + b"\x00" * 64))
    add("psd", "PSD header", "unsupported_format",
        image=write("layers.psd", b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03"
                                  + struct.pack(">II", 120, 160) + b"\x00\x08\x00\x03"
                                  + b"\x00" * 32))

    # -- blank inputs ---------------------------------------------------------------------------
    add("all-white", "all-white image", BLANK,
        image=write("white.png", _encode(_uniform("RGB", (255, 255, 255)), "PNG")))
    add("all-black", "all-black image", BLANK,
        image=write("black.png", _encode(_uniform("RGB", (0, 0, 0)), "PNG")))
    add("uniform-grey", "uniform grey image", BLANK,
        image=write("grey.jpg", _encode(_uniform("RGB", (128, 128, 128)), "JPEG")))
    add("transparent", "fully transparent RGBA", BLANK,
        image=write("transparent.png", _encode(_transparent(next(seed)), "PNG")))
    add("nearly-transparent", "0.1 % visible RGBA", BLANK,
        image=write("nearly-transparent.png", _encode(_nearly_transparent(next(seed)), "PNG")))

    # -- odd but valid images: any outcome, with a reason if it failed ---------------------------
    add("one-pixel", "1x1 pixel", None, outcome="any",
        image=write("dot.png", _encode(_uniform("RGB", (200, 30, 30), (1, 1)), "PNG")))
    add("sliver", "1x5000 sliver", None, outcome="any",
        image=write("sliver.png", _encode(_sliver(), "PNG")))
    add("sixteen-bit", "16-bit greyscale PNG", None, outcome="any",
        image=write("deep.png", _encode(_sixteen_bit(next(seed)), "PNG")))
    photo = product_photo(next(seed), SIZE)[0]
    add("cmyk-jpeg", "CMYK JPEG", None, outcome="any",
        image=write("cmyk.jpg", _encode(photo.convert("CMYK"), "JPEG", quality=90)))
    photo = product_photo(next(seed), SIZE)[0]
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    add("palette-trns", "palette PNG with tRNS", None, outcome="any",
        image=write("palette.png", _encode(palette, "PNG", transparency=0)))
    photo = product_photo(next(seed), SIZE)[0]
    add("exif-orientation-garbage", "JPEG with EXIF orientation 9999", None, outcome="any",
        image=write("exif-bad.jpg", _encode(photo, "JPEG", exif=_exif_orientation(9999))))
    photo = product_photo(next(seed), SIZE)[0]
    add("exif-corrupt", "JPEG with a corrupt EXIF block", None, outcome="any",
        image=write("exif-corrupt.jpg", _encode(
            photo, "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + bytes(range(48)))))

    # -- paths and links that leave the dataset --------------------------------------------------
    add("traversal", "manifest path ../ climbing to the outside passwd", OUTSIDE,
        image=rel_outside(passwd))
    add("traversal-deep", "manifest path ../../../.. to / and back down to a sentinel", OUTSIDE,
        image="images/" + "../" * 40 + str(hostname).lstrip("/"))
    add("absolute", "absolute path to an outside sentinel", OUTSIDE, image=str(shadow))
    add("absolute-photo", "absolute path to a valid outside photo", OUTSIDE,
        image=str(outside_photo))
    os.symlink(passwd, images / "passwd-link.png")
    add("symlink-passwd", "symlink in the dataset to the outside passwd", OUTSIDE,
        image="images/passwd-link.png")
    os.symlink(os.path.relpath(outside_photo, images), images / "photo-link.png")
    add("symlink-photo", "symlink to a valid outside PNG", OUTSIDE, image="images/photo-link.png")
    os.symlink(outside, images / "escape")
    add("symlinked-dir", "path through a symlinked directory that escapes", OUTSIDE,
        image="images/escape/mask.png")
    os.symlink(outside / "gone.png", images / "dangling-outside.png")
    add("dangling-outside", "dangling symlink pointing outside", OUTSIDE,
        alternatives=("missing",), image="images/dangling-outside.png")
    add("file-url", "file:// URL naming an outside sentinel", None, outcome="fail",
        alternatives=("missing", OUTSIDE, "unsupported_format", "unreadable"),
        image=f"file://{passwd}")
    image, _ = good_png("mask-escape.png")
    add("mask-escape", "mask path escaping the dataset", OUTSIDE, image=image,
        mask=rel_outside(outside_mask, "masks/"))
    image, _ = good_png("reference-escape.png")
    add("reference-escape", "reference path escaping the dataset", OUTSIDE, image=image,
        reference=str(outside_photo))
    shared_inode: Path | None = shadow
    try:
        os.link(shadow, images / "hardlink.png")
    except OSError as exc:  # another filesystem: the kind cannot be made here
        shared_inode = None
        notes.append(f"no hard link to the outside: {exc}")
    else:
        add("hardlink-outside", "hard link in the dataset to an outside sentinel", None,
            outcome="fail", alternatives=("unsupported_format", OUTSIDE),
            image="images/hardlink.png")

    # -- masks and references that are broken ----------------------------------------------------
    image, photo = good_png("mask-corrupt.png")
    mask_png = _encode(product_photo(12345, SIZE)[1], "PNG")
    (masks / "corrupt.png").write_bytes(mask_png[:len(mask_png) // 3])
    add("mask-corrupt", "a truncated mask", None, outcome="any", image=image,
        mask="masks/corrupt.png")
    image, photo = good_png("reference-wrong-size.png")
    photo.resize((50, 50)).save(refs / "wrong-size.png")
    add("reference-wrong-size", "a reference of the wrong size", None, outcome="any",
        image=image, reference="refs/wrong-size.png")

    # -- good images with hostile text, ids and file names: they must succeed --------------------
    image, _ = good_png("markup.png")
    add("markup-title", "rich markup in the title and category", None, outcome="succeed",
        image=image, title="[/bold]x [red]alarm[/red] [link=file:///etc/passwd]click[/link]",
        category="[red]", description="[/] unbalanced [bold")
    image, _ = good_png("rtl.png")
    add("rtl-title", "unicode and RTL override in the title", None, outcome="succeed",
        image=image, title="\u202egnp.exe\u202c منتج 商品 ✨ \u200b", category="décor-家居")
    image, _ = good_png("html.png")
    add("html-title", "HTML in the title and category", None, outcome="succeed", image=image,
        title="<script>alert('title')</script>",
        category="kitchen<img src=x onerror=alert(1)>")
    name = "my photo é 商品 (1) ;$(touch x).png"
    product_photo(next(seed), SIZE)[0].save(images / name)
    add("unicode-file-name", "file name with spaces, unicode and shell characters", None,
        outcome="succeed", image=f"images/{name}")
    image, _ = good_png("id-escape.png")
    add("../../../id-escape", "product id with ../ (a path if used as a file name)", None,
        outcome="succeed", image=image)
    add("[/bold][red]markup-id", "rich markup in the id of a failing product",
        "unsupported_format", image=write("markup-id.png", b"markup id, not an image\n"))

    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "title", "description", "category",
                                                    "image", "mask", "reference"])
        writer.writeheader()
        writer.writerows(rows)
    return HostileDataset(
        root=root, outside=outside, items=items, sentinels=sentinels,
        markers=(marker, "root:x:0", "SENTINEL"),
        outside_photo_sha256=hashlib.sha256(outside_photo.read_bytes()).hexdigest(),
        huge_file=huge, shared_inode=shared_inode, notes=notes)


def write_special_files_dataset(root: Path) -> dict[str, str | None]:
    """A small dataset with files that hang or never end when read: a FIFO named like an
    image (``unreadable``) and a symlink to ``/dev/zero`` (``outside_dataset``), beside one
    good product. Returns product id → expected reason (None: must succeed)."""
    images = root / "images"
    images.mkdir(parents=True)
    product_photo(77, SIZE)[0].save(images / "good.png")
    os.mkfifo(images / "pipe.png")
    os.symlink("/dev/zero", images / "zeros.png")
    rows: list[tuple[str, str, str | None]] = [
        ("good", "images/good.png", None), ("fifo", "images/pipe.png", "unreadable"),
        ("dev-zero", "images/zeros.png", OUTSIDE)]
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "description", "category", "image"])
        for pid, image, _ in rows:
            writer.writerow([pid, pid, "", "kitchen", image])
    return {pid: reason for pid, _, reason in rows}
