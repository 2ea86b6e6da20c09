"""Execute a notebook with papermill and export it as self-contained HTML.

The executed notebook is the record of the run. Parameters are written into it by papermill
(the injected cell and its metadata), so secrets are refused here: keys come from the
environment at run time, never from parameters.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pixellab.errors import ConfigError, NotebookError
from pixellab.redact import redact

_SECRET_NAME = re.compile(r"(?i)(api[_-]?key|token|secret|password)")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}$")





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
                            f"{redact(exc.evalue)} (executed copy: {output})",
                            ename=exc.ename, executed=output) from None
    return output


def declared_parameters(notebook: str | os.PathLike[str]) -> dict[str, Any]:
    """The names and defaults of the notebook's ``parameters`` cell."""
    import papermill

    inspected = papermill.inspect_notebook(str(notebook))
    return {name: info.get("default") for name, info in inspected.items()}


def read_parameters(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A parameters file (YAML, or TOML by its suffix): a mapping of parameter → value."""
    from pixellab.config_files import read_mapping

    return read_mapping(path, what="parameters file")


@dataclass(frozen=True)
class ScheduledRun:
    folder: Path
    executed: Path
    html: Path
    error: NotebookError | None = None


def run_to_reports(notebook: str | os.PathLike[str], parameters: dict[str, Any], *,
                   reports: str | os.PathLike[str] = "reports", name: str | None = None,
                   started: datetime | None = None, source: str | None = None,
                   cwd: str | os.PathLike[str] | None = None) -> ScheduledRun:
    """Execute ``notebook`` and keep the executed copy and its HTML under
    ``reports/<name>/<UTC timestamp>/`` — a scheduled run's record. A failing cell still
    leaves both files (they show everything up to the failure) and is returned as ``error``.

    Parameters the notebook does not declare are refused (a typo would otherwise be ignored
    and the defaults silently used)."""
    declared = declared_parameters(notebook)
    for key in parameters:
        if key not in declared:
            raise ConfigError(f"{Path(notebook).name} has no parameter {key!r} (it has: "
                              f"{', '.join(declared)})", path=source, key=key)
    name = str(name or parameters.get("name") or declared.get("name") or Path(notebook).stem)
    name = name.strip("'\"")
    if not _SAFE_NAME.match(name):
        raise ConfigError("use letters, digits, '-', '_' or '.' for the name",
                          path=source, key="name")
    stamp = (started or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(reports) / name / stamp
    executed = folder / f"{Path(notebook).stem}.ipynb"
    error: NotebookError | None = None
    try:
        execute(notebook, executed, parameters, cwd=cwd)
    except NotebookError as exc:
        if not executed.exists():
            raise
        error = exc
    html = export_html(executed, folder / f"{Path(notebook).stem}.html")
    return ScheduledRun(folder=folder, executed=executed, html=html, error=error)


TEMPLATES = Path(__file__).parent / "templates"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def static_copy(nb: Any) -> Any:
    """The notebook as a static page shows it: live widgets (progress bars, review controls)
    need a kernel or a widget manager fetched from a CDN, so their outputs are dropped and only
    what they printed as plain data stays."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                continue
            kept.append(output)
        cell.outputs = kept
    return nb


def export_html(executed: str | os.PathLike[str], html_path: str | os.PathLike[str]) -> Path:
    """Write a self-contained HTML page: outputs only (code hidden), images embedded, nothing
    fetched from the network, readable on a phone (see ``templates/pixellab_report``)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="pixellab_report",
                            extra_template_basedirs=[str(TEMPLATES)],
                            exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    nb = static_copy(nbformat.read(str(executed), as_version=4))
    body, _ = exporter.from_notebook_node(nb)
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(body, encoding="utf-8")
    return html_path
