"""Run the ``pixellab`` command with every file it opens or lists written to a log.

    python tests/audit_open.py LOG [pixellab arguments...]

A :func:`sys.addaudithook` hook records the path of each ``open`` audit event (``open()``,
``io.open``, ``os.open``: every file Python code opens) and each ``os.listdir`` /
``os.scandir``, as one JSON line ``{"event": ..., "path": ..., "cwd": ...}``, then
``pixellab.cli.main()`` runs. Python processes the command starts (the papermill kernel that
executes a report notebook) log to the same file: a ``sitecustomize.py`` beside the log, put on
their ``PYTHONPATH``, installs the same hook when ``PIXELLAB_AUDIT_OPEN_LOG`` is set.

What it cannot see: files that C code opens itself (``cv2.imread``, DuckDB, libpng through a
path). Tests that must be sure pair it with the files' access times.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ENV = "PIXELLAB_AUDIT_OPEN_LOG"
EVENTS = frozenset({"open", "os.listdir", "os.scandir"})
_installed: list[str] = []


def install(log: str | os.PathLike[str]) -> None:
    """Log every open/list event of this process to ``log`` (appending; once per process)."""
    if _installed:
        return
    fd = os.open(os.fspath(log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    _installed.append(os.fspath(log))
    seen: set[tuple[str, str]] = set()
    dumps = json.dumps

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in EVENTS:
            return
        path = args[0] if args else None
        if path is None or isinstance(path, int):  # an fd: its path was logged when opened
            return
        try:
            text = os.fsdecode(os.fspath(path))
        except (TypeError, ValueError):
            return
        if (event, text) in seen:
            return
        seen.add((event, text))
        line = dumps({"event": event, "path": text, "cwd": os.getcwd(), "pid": os.getpid()})
        os.write(fd, (line + "\n").encode("utf-8", "backslashreplace"))

    sys.addaudithook(hook)


def sitecustomize_dir(log: str | os.PathLike[str]) -> Path:
    """A folder holding a ``sitecustomize.py`` that installs the hook in any Python process
    started with it on ``PYTHONPATH`` and ``PIXELLAB_AUDIT_OPEN_LOG`` set."""
    folder = Path(f"{os.fspath(log)}.site")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import os\n"
        f"if os.environ.get({ENV!r}):\n"
        "    import importlib.util\n"
        f"    _spec = importlib.util.spec_from_file_location('_audit_open', {__file__!r})\n"
        "    _module = importlib.util.module_from_spec(_spec)\n"
        "    _spec.loader.exec_module(_module)\n"
        f"    _module.install(os.environ[{ENV!r}])\n")
    return folder


def read_log(log: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The logged events; a line cut by a killed process is skipped."""
    events = []
    try:
        text = Path(log).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    log = os.path.abspath(sys.argv[1])
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # tests/ is not the pixellab package's neighbourhood
    site = sitecustomize_dir(log)
    os.environ[ENV] = log
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    install(log)
    sys.argv = ["pixellab", *sys.argv[2:]]
    from pixellab.cli import main as pixellab_main

    pixellab_main()


if __name__ == "__main__":
    main()
