"""Execute a notebook with papermill and export it as self-contained HTML.

The executed notebook is the record of the run. Parameters are written into it by papermill
(the injected cell and its metadata), so secrets are refused here: keys come from the
environment at run time, never from parameters.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pixellab.errors import ConfigError, PixellabError
from pixellab.redact import redact

_SECRET_NAME = re.compile(r"(?i)(api[_-]?key|token|secret|password)")


class NotebookError(PixellabError):
    """Executing or exporting a notebook failed; the message says which cell and why."""


def _refuse_secrets(parameters: dict[str, Any]) -> None:
    for name, value in parameters.items():
        if _SECRET_NAME.search(name) or (isinstance(value, str) and redact(value) != value):
            raise ConfigError("looks like a secret; notebook parameters are stored in the "
                              "executed notebook, so pass keys through the environment",
                              key=f"parameters.{name}")


def execute(notebook: str | os.PathLike[str], output: str | os.PathLike[str],
            parameters: dict[str, Any], *, cwd: str | os.PathLike[str] | None = None,
            progress: bool = False) -> Path:
    """Run ``notebook`` with ``parameters`` and write the executed copy to ``output``."""
    try:
        import papermill
    except ImportError:
        raise NotebookError(
            "papermill is not installed: pip install 'pixellab[notebooks]'") from None
    _refuse_secrets(parameters)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    from traitlets.config import Config

    try:
        # IPC sockets (files in a private temp dir) instead of TCP on loopback: nothing listens
        # on a port, and ipykernel has no reason to warn about unencrypted traffic.
        with tempfile.TemporaryDirectory(prefix="pixellab-kernel-") as ipc:
            config = Config({"KernelManager": {"transport": "ipc",
                                               "ip": str(Path(ipc) / "kernel")}})
            papermill.execute_notebook(str(notebook), str(output), parameters=parameters,
                                       kernel_name="python3", cwd=str(cwd or os.getcwd()),
                                       progress_bar=progress, report_mode=True, config=config)
    except papermill.PapermillExecutionError as exc:
        raise NotebookError(f"{notebook}: cell {exc.exec_count} raised {exc.ename}: "
                            f"{redact(exc.evalue)} (executed copy: {output})") from None
    return output


def export_html(executed: str | os.PathLike[str], html_path: str | os.PathLike[str]) -> Path:
    """Write a self-contained HTML page: outputs only (code hidden), images embedded."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(str(executed), as_version=4))
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(body, encoding="utf-8")
    return html_path
