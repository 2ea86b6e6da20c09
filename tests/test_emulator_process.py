"""The emulator as a process, started the way people and CI start it: ``python -m
pixellab.emulator`` and ``pixellab emulate``, as a background job (SIGINT ignored, no terminal).

Each entry point prints its exports, serves, and on SIGINT or SIGTERM stops within
:data:`STOP_BOUND_S`, exits 0 and deletes its temp dir, which holds the TLS private key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, started

STOP_BOUND_S = 5.0
EXPORTS = 8  # Emulator.env() has eight variables; both entry points print them first

ENTRY_POINTS = {
    "python -m pixellab.emulator": [sys.executable, "-m", "pixellab.emulator"],
    "pixellab emulate": [sys.executable, "-m", "pixellab.cli", "emulate"],
}


def read_exports(process: subprocess.Popen[str]) -> dict[str, str]:
    """The first ``export K=V`` lines of its stdout (values may be shell-quoted)."""
    assert process.stdout is not None
    exports = {}
    for _ in range(EXPORTS):
        line = process.stdout.readline()
        assert line.startswith("export "), f"not an export line: {line!r}"
        key, value = line.strip().removeprefix("export ").split("=", 1)
        exports[key] = value.strip("'")
    return exports


def serving_emulator(entry_point: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """Its command line, and an environment whose TMPDIR is this test's own folder, so its
    temp dir is found without looking at anyone else's."""
    return ([*ENTRY_POINTS[entry_point], "--latency", "0.01"],
            {**os.environ, "TMPDIR": str(tmp_path)})


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_background_emulator_stops_on_a_signal_exits_0_and_deletes_its_private_key(
        entry_point: str, signum: signal.Signals, tmp_path: Path) -> None:
    args, env = serving_emulator(entry_point, tmp_path)
    with started(args, ignore_sigint=True, cwd=REPO, env=env, stdout=subprocess.PIPE,
                 stderr=subprocess.DEVNULL) as process:
        exports = read_exports(process)
        temp_dir = Path(exports["SSL_CERT_FILE"]).parent
        assert temp_dir.parent == tmp_path and (temp_dir / "server.pem").is_file()
        base = exports["REPLICATE_BASE_URL"].removesuffix("/replicate")
        assert httpx.get(f"{base}/__emu/log", timeout=10).status_code == 200

        process.send_signal(signum)
        sent = time.monotonic()
        try:
            code = process.wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{entry_point} still running {STOP_BOUND_S} s after {signum.name}")
        took = time.monotonic() - sent

    assert (code, temp_dir.exists()) == (0, False), f"stopped in {took:.1f} s"


def test_python_dash_m_prints_exports_and_serves_until_interrupted(tmp_path: Path) -> None:
    args, env = serving_emulator("python -m pixellab.emulator", tmp_path)
    with started(args, ignore_sigint=True, cwd=REPO, env=env, stdout=subprocess.PIPE,
                 stderr=subprocess.DEVNULL) as process:
        exports = read_exports(process)
        assert exports["OPENAI_BASE_URL"].startswith("http://127.0.0.1:")
        base = exports["REPLICATE_BASE_URL"].removesuffix("/replicate")
        assert httpx.get(f"{base}/__emu/log", timeout=10).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=STOP_BOUND_S) == 0
