"""Providers are plugins: a package registered through the ``pixellab.providers`` entry point
(and its models through ``pixellab.catalogs``) runs in a sweep like the shipped four.

The plugin here is a real installed distribution as far as ``importlib.metadata`` can tell: a
package folder and a ``*.dist-info`` with ``entry_points.txt`` on ``PYTHONPATH``, and the sweep
is the real CLI in its own process.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from pixellab.ledger import Ledger
from tests.conftest import run_process

PROVIDER = '''
"""A provider from another package: mirrors the photo, free, done at once."""
import io
import itertools

from PIL import Image, ImageOps

from pixellab.providers.base import Job, JobState, Output


class MirrorProvider:
    name = "mirror"

    def __init__(self):
        self._ids = itertools.count(1)

    def missing_credentials(self):
        return None

    async def submit(self, request):
        image = Image.open(io.BytesIO(request.image)).convert("RGB")
        buffer = io.BytesIO()
        ImageOps.mirror(image).save(buffer, format="PNG")
        return Job(f"mirror-{next(self._ids)}", JobState.SUCCEEDED,
                   output=Output(buffer.getvalue(), "image/png"))

    async def poll(self, job):
        return job

    async def cancel(self, job):
        return None
'''

CATALOG = '''
[models."mirror:flip"]
description = "The photo, mirrored (a plugin's model)"
tasks = ["enhance"]
endpoint = "flip"
pricing = { unit = "image", usd_per_unit = 0.0 }
preserves_size = true
'''


def _install(site: Path, entry_points: str) -> None:
    """A distribution ``pixellab-mirror`` with ``entry_points`` on the path ``site``."""
    package = site / "pixellab_mirror"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PROVIDER)
    (package / "models.toml").write_text(CATALOG)
    info = site / "pixellab_mirror-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pixellab-mirror\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def _sweep_with_plugin(tmp_path: Path, dataset_dir: Path, provider_target: str) -> Ledger:
    """Install the plugin with its provider entry point at ``provider_target``, run a sweep
    of its model beside a shipped one through the CLI, and open the ledger."""
    site = tmp_path / "site"
    _install(site, f"""
        [pixellab.providers]
        mirror = {provider_target}

        [pixellab.catalogs]
        mirror = pixellab_mirror
    """)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"name: plugged\ntask: enhance\ndataset: {dataset_dir}\nlimit: 2\n"
                    "models: [mirror:flip, local:autoenhance]\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = run_process([sys.executable, "-m", "pixellab.cli", "sweep", "run", str(spec),
                          "--home", str(tmp_path / "home")], cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return Ledger(tmp_path / "home" / "ledger.duckdb", read_only=True)


@pytest.mark.slow
def test_a_provider_registered_through_the_entry_point_runs_a_sweep(
        tmp_path: Path, dataset_dir: Path) -> None:
    ledger = _sweep_with_plugin(tmp_path, dataset_dir, "pixellab_mirror:MirrorProvider")
    done = ledger.query("select model_id, status, count(*) n from requests "
                        "group by all order by model_id")
    assert done.to_dict("records") == [
        {"model_id": "local:autoenhance", "status": "succeeded", "n": 2},
        {"model_id": "mirror:flip", "status": "succeeded", "n": 2}]


@pytest.mark.slow
def test_a_plugin_that_cannot_load_skips_its_models_with_the_reason_and_the_sweep_goes_on(
        tmp_path: Path, dataset_dir: Path) -> None:
    ledger = _sweep_with_plugin(tmp_path, dataset_dir,
                                "pixellab_mirror.missing:MirrorProvider")
    skipped = ledger.query("select distinct status, error_class, error_message from attempts "
                           "where model_id = 'mirror:flip'").to_dict("records")
    assert len(skipped) == 1 and skipped[0]["status"] == "skipped"
    assert "provider plugin 'mirror' (pixellab-mirror" in skipped[0]["error_message"]
    assert "cannot be loaded: ModuleNotFoundError" in skipped[0]["error_message"]
    assert set(ledger.query("select status from requests where arm = 'local:autoenhance'")
               ["status"]) == {"succeeded"}
