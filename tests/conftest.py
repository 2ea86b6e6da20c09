"""Shared fixtures: real DuckDB files and real images in tmp dirs, made on the fly."""

from __future__ import annotations

import csv
import io
import ipaddress
import os
import signal
import socket
import subprocess
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pixellab.catalog import load_catalog
from pixellab.workbench import Workbench

REPO = Path(__file__).resolve().parent.parent


# -- processes a test starts -----------------------------------------------------------------


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def started(args: Sequence[str | os.PathLike[str]], *, ignore_sigint: bool = False,
            grace_s: float = 0.0, **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """Start ``args`` as CI starts it, and always end it: the context manager to start a
    process with in a test.

    The process gets a session of its own (no controlling terminal; a Ctrl-C at the keyboard
    reaches pytest, not it), stdin from ``/dev/null`` and text pipes if asked for.
    ``ignore_sigint`` starts it with SIGINT ignored, as a non-interactive shell's ``cmd &``
    does. On leaving, whatever happened, its whole process group gets SIGTERM and ``grace_s``
    seconds to exit (0: none), then SIGKILL, and the process is reaped.
    """
    popen.setdefault("stdin", subprocess.DEVNULL)
    popen.setdefault("text", True)
    if ignore_sigint:
        popen["preexec_fn"] = _ignore_sigint
    process = subprocess.Popen(list(args), start_new_session=True, **popen)
    try:
        yield process
    finally:
        try:
            if grace_s > 0 and process.poll() is None:
                _signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    pass
            _signal_group(process, signal.SIGKILL)  # also what it started in its group
            process.wait(timeout=30)
        finally:
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


def _signal_group(process: subprocess.Popen[str], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the process leads its own session, so its group
    except (ProcessLookupError, PermissionError):  # no one left in the group
        pass


def run_process(args: Sequence[str | os.PathLike[str]], *, timeout: float,
                **popen: Any) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(args, capture_output=True, text=True, timeout=timeout)``, started with
    :func:`started`: no terminal, and on a timeout its whole process group is killed, not
    only the process itself."""
    with started(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen) as process:
        stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(list(args), process.returncode, stdout, stderr)


def register_tiny_clip(folder: Path, name: str) -> str:
    """Register a tiny open_clip architecture (random weights, milliseconds per image) under
    ``name``: no weights can be downloaded here, and the CLIP arithmetic needs a real model."""
    import json

    import open_clip

    path = folder / f"{name}.json"
    path.write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16,
                       "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                     "layers": 2}}))
    open_clip.add_model_config(path)
    return name


def product_photo(seed: int, size: tuple[int, int] = (320, 240)) -> tuple[Image.Image, Image.Image]:
    """A shaded ellipse 'product' on a coloured gradient, and its exact mask."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(60, 200, 3)
    background = base[None, None, :] + (yy[..., None] / h * 40)
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    rx, ry = w * rng.uniform(0.15, 0.25), h * rng.uniform(0.2, 0.3)
    inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    colour = np.array([30, 60, 160]) if base.mean() > 120 else np.array([240, 200, 40])
    shade = 1 - 0.4 * ((xx - cx + rx) / (2 * rx)).clip(0, 1)
    product = colour[None, None, :] * shade[..., None]
    pixels = np.where(inside[..., None], product, background)
    pixels = pixels + rng.normal(0, 3, pixels.shape)
    photo = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    mask = Image.fromarray((inside * 255).astype(np.uint8), "L")
    return photo, mask


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny, valid-looking PNG whose header declares ``width`` × ``height`` pixels."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 8] = width.to_bytes(4, "big")
    data[ihdr + 8:ihdr + 12] = height.to_bytes(4, "big")
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17]))
    data[ihdr + 17:ihdr + 21] = crc.to_bytes(4, "big")
    return bytes(data)


@pytest.fixture(scope="module")
def photo_png() -> bytes:
    """One product photo as PNG bytes, for tests that talk to the emulator directly."""
    photo, _ = product_photo(3)
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    return buffer.getvalue()


def write_prompted_dataset(root: Path, n: int, prompt_id: str,
                           monkeypatch: pytest.MonkeyPatch) -> Path:
    """``n`` products and a prompt ``prompt_id`` whose text names each product, so every job an
    emulator sees tells which request made it (its ``prompt`` input); the prompt folder is
    made the one prompts load from."""
    prompts = root / "prompts"
    prompts.mkdir(parents=True)
    (prompts / f"{prompt_id}.j2").write_text("Enhance the photo of {{ title }}")
    monkeypatch.setenv("PIXELLAB_PROMPTS", str(prompts))
    return write_dataset(root / "dataset", n=n)


def write_dataset(root: Path, n: int = 4, categories: tuple[str, ...] = ("kitchen", "jewelry"),
                  extra_rows: list[dict[str, str]] | None = None) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        pid = f"p{i:02d}"
        photo, mask = product_photo(i)
        photo.save(root / "images" / f"{pid}.png")
        mask.save(root / "masks" / f"{pid}.png")
        rows.append({"id": pid, "title": f"Product {i}", "description": f"A test product {i}.",
                     "category": categories[i % len(categories)],
                     "image": f"images/{pid}.png", "mask": f"masks/{pid}.png", "reference": ""})
    rows.extend(extra_rows or [])
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


BAD_INPUTS = {"corrupt": "truncated", "empty": "zero_bytes", "bomb": "too_large"}


def write_dataset_with_bad_inputs(root: Path) -> Path:
    """Four good products plus a truncated PNG, a 0-byte file and a decompression bomb; the
    values of :data:`BAD_INPUTS` are the reasons each must be rejected with."""
    rows = [{"id": name, "title": name.title(), "description": "", "category": "kitchen",
             "image": f"images/{name}.png", "mask": "", "reference": ""} for name in BAD_INPUTS]
    write_dataset(root, extra_rows=rows)
    good = (root / "images" / "p00.png").read_bytes()
    (root / "images" / "corrupt.png").write_bytes(good[: len(good) // 2])
    (root / "images" / "empty.png").write_bytes(b"")
    (root / "images" / "bomb.png").write_bytes(bomb_png())
    return root


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "dataset")


TEST_MODELS = """
[models."local:blank"]
tasks = ["enhance", "remove_background", "packshot"]
endpoint = "solid"
pricing = { unit = "image", usd_per_unit = 0.0 }
preserves_size = true

[models."local:noop"]
tasks = ["enhance"]
endpoint = "identity"
pricing = { unit = "image", usd_per_unit = 0.0 }
preserves_size = true

[models."local:broken"]
tasks = ["enhance", "remove_background", "packshot"]
endpoint = "fail"
pricing = { unit = "image", usd_per_unit = 0.0 }
preserves_size = true

[models."local:autoenhance-paid"]
tasks = ["enhance"]
endpoint = "autoenhance"
pricing = { unit = "image", usd_per_unit = 0.05, credits_per_unit = 2 }
"""


@pytest.fixture
def test_catalog_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "test-models.toml").write_text(TEST_MODELS)
    return folder


@pytest.fixture
def workbench(tmp_path: Path, test_catalog_dir: Path) -> Workbench:
    return Workbench(tmp_path / "home", catalog=load_catalog(test_catalog_dir))


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback_only(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        host = str(address[0])
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {host}")


@pytest.fixture(autouse=True)
def no_traffic_beyond_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test: a connect to anything but 127.0.0.0/8 or ::1 fails loudly."""

    def connect(self: socket.socket, address: object) -> None:
        _loopback_only(self, address)
        _real_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        _loopback_only(self, address)
        return _real_connect_ex(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


# -- a real browser for the report's HTML -----------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
"""Headless Chromium as root on a closed network: without the background-networking flags it
tries Google's hosts at every start."""


def _install_chromium() -> str:
    """Install Debian's chromium package; returns why it could not be, or '' on success."""
    import shutil

    apt = shutil.which("apt-get")
    if apt is None:
        return "no apt-get on this machine (not Debian-like)"
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None or run_process([sudo, "-n", "true"], timeout=60).returncode:
            return "not root and no password-less sudo to run apt-get"
        prefix = [sudo, "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update", "-qq"],
                    [apt, "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        try:
            done = run_process(prefix + command, env=env, timeout=900)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` took more than 15 minutes"
        if done.returncode:
            return f"`{' '.join(command)}` failed: {(done.stderr or done.stdout)[-300:]}"
    return ""


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path to Debian's Chromium, installed by the test set-up when missing; the test is skipped,
    with the reason, only where it cannot be installed."""
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = _install_chromium()
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"Chromium is not installed and could not be: {reason or 'unknown'}")
    return found
