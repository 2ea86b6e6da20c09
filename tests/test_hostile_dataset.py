"""P8 acceptance: a hostile dataset runs through enhance, remove_background, packshot, upscale,
``sweep estimate`` and the report. Every item has an outcome, every command completes, and
nothing from outside the dataset folder is read.

The commands are the real CLI in subprocesses, as a user runs them, under
``tests/audit_open.py`` (every file Python opens is logged, the report's kernel included); the
sentinel files beside the dataset also have their access times watched, which catches reads
from C code too. The dataset and what each item must end as: ``tests/hostile.py``.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pixellab.datasets import load_dataset
from pixellab.ledger import Ledger
from tests.audit_open import read_log
from tests.conftest import REPO, run_process
from tests.hostile import (
    HostileDataset,
    HostileItem,
    write_hostile_dataset,
    write_special_files_dataset,
)

SWEEPS: dict[str, dict[str, Any]] = {
    "enhance": {"models": ["local:autoenhance"]},
    "remove_background": {"models": ["local:cutout"]},
    "packshot": {"models": ["local:packshot"], "params": {"size": 256}},
    "upscale": {"models": ["local:upscale-lanczos"], "params": {"scale": 2}, "degrade": True},
}
TASKS = list(SWEEPS)
PAID_MODEL = "replicate:black-forest-labs/flux-kontext-pro"
PAID_USD_PER_IMAGE = 0.04
COMMANDS = [f"sweep run {task}" for task in TASKS] + ["sweep estimate", "report"]
TIMEOUT_S = 300
OLD_ATIME_NS = 946_684_800 * 10**9  # 2000-01-01: any read moves it (relatime included)


@dataclass
class Command:
    args: list[str]
    returncode: int | None
    """None: killed after :data:`TIMEOUT_S`."""
    stdout: str
    stderr: str
    seconds: float

    def explain(self) -> str:
        status = ("timed out" if self.returncode is None else f"exited {self.returncode}")
        return (f"`pixellab {' '.join(self.args)}` {status} after {self.seconds:.1f} s; "
                f"stderr:\n{self.stderr[-4000:]}\nstdout:\n{self.stdout[-1500:]}")


@dataclass
class HostileRun:
    data: HostileDataset
    folder: Path
    home: Path
    audit: Path
    """One open/list log per command (``<audit>/<command>.log``), its child processes'
    included."""
    commands: dict[str, Command] = field(default_factory=dict)
    atime_tracked: bool = False
    atimes: dict[Path, int] = field(default_factory=dict)
    outside_before: dict[str, tuple[int, int]] = field(default_factory=dict)
    sentinel_digests: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    report_html: Path | None = None

    def audit_log(self, command: str) -> Path:
        return self.audit / (command.replace(" ", "-") + ".log")

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(command, event) for every file the commands' Python code opened or listed."""
        return [(name, event) for name in self.commands
                for event in read_log(self.audit_log(name))]

    def requests(self, task: str) -> pd.DataFrame:
        frame = self.tables.get("__requests__")
        if frame is None or frame.empty:
            return pd.DataFrame(columns=["sweep_id", "product_id", "status", "error_class",
                                         "error_reason", "error_message", "attempts"])
        return frame[frame["sweep_id"] == f"hostile-{task}"]


def _environment() -> dict[str, str]:
    """The user's environment without pixellab settings: --home decides where data goes."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PIXELLAB_")}


def _pixellab(folder: Path, log: Path, *args: str, timeout: float = TIMEOUT_S,
              **popen: Any) -> Command:
    argv = [sys.executable, str(REPO / "tests" / "audit_open.py"), str(log), *args]
    started = time.monotonic()
    try:
        done = run_process(argv, cwd=folder, env=_environment(), timeout=timeout, **popen)
    except subprocess.TimeoutExpired as exc:
        def text(value: object) -> str:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")

        return Command(list(args), None, text(exc.stdout), text(exc.stderr),
                       time.monotonic() - started)
    return Command(list(args), done.returncode, done.stdout, done.stderr,
                   time.monotonic() - started)


def _atime_is_tracked(folder: Path) -> bool:
    canary = folder / "atime-canary"
    canary.write_text("canary")
    os.utime(canary, ns=(OLD_ATIME_NS, canary.stat().st_mtime_ns))
    canary.read_text()
    return canary.stat().st_atime_ns != OLD_ATIME_NS


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        found[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return found


def _read_ledger(run: HostileRun) -> None:
    path = run.home / "ledger.duckdb"
    if not path.exists():
        return
    ledger = Ledger(path, read_only=True)
    names = ledger.query("select table_name from information_schema.tables")["table_name"]
    for name in names:
        run.tables[str(name)] = ledger.query(f'select * from "{name}"')
    run.tables["__requests__"] = ledger.query(
        """select s.sweep_id, r.product_id, r.status, r.error_class, r.error_reason,
                  r.error_message,
                  (select count(*) from attempts a where a.request_key = r.request_key
                     and a.sweep_id = s.sweep_id) as attempts
           from requests r join sweep_requests s using (request_key)""")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    base = tmp_path_factory.mktemp("hostile")
    data = write_hostile_dataset(base / "dataset", base / "dataset-outside")
    folder = base / "work"
    folder.mkdir()
    run = HostileRun(data=data, folder=folder, home=base / "home", audit=base / "audit")
    run.audit.mkdir()
    # A hard link's bytes are the dataset's own as far as the file system can tell: hashing
    # them is no escape, echoing them is (the text markers still cover it).
    run.sentinel_digests = {hashlib.sha256(p.read_bytes()).hexdigest(): p.name
                            for p in data.sentinels if p != data.shared_inode}
    run.atime_tracked = _atime_is_tracked(base)
    for sentinel in data.sentinels:
        os.utime(sentinel, ns=(OLD_ATIME_NS, sentinel.stat().st_mtime_ns))
        run.atimes[sentinel] = sentinel.stat().st_atime_ns
    run.outside_before = _snapshot(data.outside)

    home = ["--home", str(run.home)]
    estimate = folder / "estimate.yaml"
    estimate.write_text(yaml.safe_dump({
        "name": "hostile-estimate", "task": "enhance", "dataset": str(data.root),
        "models": ["local:autoenhance", PAID_MODEL], "concurrency": 2}))
    run.commands["sweep estimate"] = _pixellab(
        folder, run.audit_log("sweep estimate"), "sweep", "estimate", str(estimate), *home)
    for task, fields in SWEEPS.items():
        spec = folder / f"{task}.yaml"
        spec.write_text(yaml.safe_dump({"name": f"hostile-{task}", "task": task,
                                        "dataset": str(data.root), "concurrency": 2,
                                        **fields}))
        name = f"sweep run {task}"
        run.commands[name] = _pixellab(folder, run.audit_log(name), "sweep", "run", str(spec),
                                       *home)
    report = folder / "report.yaml"
    report.write_text(yaml.safe_dump({
        "sweep_ids": [f"hostile-{task}" for task in TASKS], "title": "hostile dataset",
        "max_products": 200, "min_products": 2, "resamples": 100,
        "routes_path": str(folder / "no-routes.toml")}))
    run.commands["report"] = _pixellab(
        folder, run.audit_log("report"), "sweep", "run", str(report), "--notebook",
        str(REPO / "notebooks" / "90_report.ipynb"), "--reports", str(folder / "reports"),
        *home)
    found = sorted((folder / "reports").glob("*/*/90_report.html"))
    run.report_html = found[-1] if found else None
    _read_ledger(run)
    return run


def _item_line(item: HostileItem, row: Any | None) -> str:
    if row is None:
        return f"{item.product_id!r} ({item.kind}): no request"
    message = str(row.error_message)[:240] if isinstance(row.error_message, str) else "-"
    return (f"{item.product_id!r} ({item.kind}): expected "
            f"{sorted(item.reasons) or item.outcome}, got {row.status} "
            f"{row.error_class}/{row.error_reason}: {message}")


def _rows(run: HostileRun, task: str) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {}
    for row in run.requests(task).itertuples(index=False):
        rows.setdefault(str(row.product_id), []).append(row)
    return rows


# -- the dataset itself (fast) -------------------------------------------------------------------


def test_the_hostile_dataset_holds_at_least_30_kinds_of_bad_item(tmp_path: Path) -> None:
    data = write_hostile_dataset(tmp_path / "dataset", tmp_path / "dataset-outside")
    bad = {item.kind for item in data.items.values() if item.outcome != "succeed"}
    assert len(bad) >= 30, sorted(bad)
    assert len(data.of_outcome("succeed")) >= 3


def test_loading_the_hostile_dataset_does_not_raise(tmp_path: Path) -> None:
    data = write_hostile_dataset(tmp_path / "dataset", tmp_path / "dataset-outside")
    dataset = load_dataset(data.root)
    assert [p.id for p in dataset.products] == list(data.items)


# -- every command completes ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_exits_0(hostile_run: HostileRun, name: str) -> None:
    command = hostile_run.commands[name]
    exit_code, clean = command.returncode, "Traceback" not in command.stderr
    assert exit_code == 0 and clean, command.explain()


# -- every item has an outcome -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_every_product_has_exactly_one_finished_request_per_sweep(
        hostile_run: HostileRun, task: str) -> None:
    rows = _rows(hostile_run, task)
    problems = []
    for pid, item in hostile_run.data.items.items():
        found = rows.get(pid, [])
        if len(found) != 1:
            problems.append(f"{pid!r} ({item.kind}): {len(found)} requests")
        elif found[0].status not in ("succeeded", "failed"):
            problems.append(_item_line(item, found[0]))
    assert not problems, (f"{len(problems)} of {len(hostile_run.data.items)} products:\n"
                          + "\n".join(problems))


def _names_its_file_or_row(item: HostileItem, message: str) -> bool:
    names = {Path(f).name for f in item.files} | set(item.files)
    names |= {repr(n)[1:-1] for n in names}  # a NUL byte or a newline shown escaped
    return any(n and n in message for n in names) or f"row {item.row}" in message


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_every_failure_has_a_reason_and_names_the_products_file_or_row(
        hostile_run: HostileRun, task: str) -> None:
    problems = []
    for pid, found in _rows(hostile_run, task).items():
        item = hostile_run.data.items.get(pid)
        for row in found:
            if item is None or row.status != "failed":
                continue
            message = row.error_message if isinstance(row.error_message, str) else ""
            if row.error_class != "InvalidInputImage":
                # The model's output failed: the message names the model, the class says why.
                if not (isinstance(row.error_class, str) and message):
                    problems.append("no class or message: " + _item_line(item, row))
            elif not (isinstance(row.error_reason, str) and row.error_reason):
                problems.append("no reason: " + _item_line(item, row))
            elif not _names_its_file_or_row(item, message):
                problems.append("names neither file nor row: " + _item_line(item, row))
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_each_bad_item_fails_with_its_reason(hostile_run: HostileRun, task: str) -> None:
    rows = _rows(hostile_run, task)
    problems = []
    for pid, item in hostile_run.data.items.items():
        if item.outcome != "fail":
            continue
        found = rows.get(pid, [])
        row = found[0] if found else None
        if row is None or row.status != "failed" or row.error_class != "InvalidInputImage" or (
                item.reasons and row.error_reason not in item.reasons):
            problems.append(_item_line(item, row))
    assert not problems, (f"{len(problems)} of {len(hostile_run.data.of_outcome('fail'))} bad "
                          "items:\n" + "\n".join(problems))


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_good_products_succeed(hostile_run: HostileRun, task: str) -> None:
    rows = _rows(hostile_run, task)
    problems = []
    for pid, item in hostile_run.data.items.items():
        found = rows.get(pid, [])
        if item.outcome == "succeed" and (not found or found[0].status != "succeeded"):
            problems.append(_item_line(item, found[0] if found else None))
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_refused_inputs_reach_no_provider(hostile_run: HostileRun, task: str) -> None:
    frame = hostile_run.requests(task)
    refused = frame[frame["error_class"] == "InvalidInputImage"]
    assert not refused.empty, "no request was refused as an invalid input"
    called = refused[refused["attempts"] > 0]
    assert called.empty, called[["product_id", "error_reason", "attempts"]].to_string()


HEADER_REASONS = frozenset({"zero_bytes", "missing", "unreadable", "too_many_bytes",
                            "unsupported_format", "too_large", "outside_dataset"})
"""Reasons :func:`pixellab.validate.probe_input_image` or the manifest's paths give."""


# -- the estimate --------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_estimate_prices_only_the_usable_inputs(hostile_run: HostileRun) -> None:
    command = hostile_run.commands["sweep estimate"]
    exit_code = command.returncode
    assert exit_code == 0, command.explain()
    text = " ".join(command.stdout.split())
    found = re.search(re.escape(PAID_MODEL) + r": \$(\d+\.\d+)", text)
    assert found, f"no price for {PAID_MODEL} in:\n{command.stdout}"
    usd = float(found.group(1))
    data = hostile_run.data
    # The estimate reads headers only: what a header or a path refuses costs nothing; what
    # fails only when decoded (truncated pixel data, a blank photo) is priced, an upper bound.
    refused = [item for item in data.of_outcome("fail")
               if item.reasons and item.reasons <= HEADER_REASONS]
    must = len(data.of_outcome("succeed"))
    low, high = must * PAID_USD_PER_IMAGE, (len(data.items) - len(refused)) * PAID_USD_PER_IMAGE
    assert low - 1e-6 <= usd <= high + 1e-6, (
        f"${usd:.4f} for {PAID_MODEL}: the {must} good products are worth ${low:.2f}, and the "
        f"{len(refused)} inputs a header or a path refuses must cost nothing (at most "
        f"${high:.2f})")


# -- nothing from outside is read ------------------------------------------------------------------


def _texts(run: HostileRun) -> dict[str, str]:
    """Everything the commands showed or kept, by where it was found."""
    texts = {f"{name} stdout": c.stdout for name, c in run.commands.items()}
    texts |= {f"{name} stderr": c.stderr for name, c in run.commands.items()}
    for name, frame in run.tables.items():
        texts[f"ledger {name}"] = "\n".join(str(v) for v in frame.to_numpy().ravel())
    if run.report_html is not None:
        for path in run.report_html.parent.iterdir():
            texts[f"report {path.name}"] = path.read_text(errors="replace")
    return texts


@pytest.mark.slow
def test_no_sentinel_content_appears_in_messages_ledger_store_or_report(
        hostile_run: HostileRun) -> None:
    markers = list(hostile_run.data.markers) + list(hostile_run.sentinel_digests)
    leaks = []
    for where, text in _texts(hostile_run).items():
        for marker in markers:
            at = text.find(marker)
            if at != -1:
                leaks.append(f"{where}: {marker!r} in …{text[max(0, at - 120):at + 80]!r}…")
    store = hostile_run.home / "store"
    for path in (store.rglob("*") if store.exists() else []):
        if path.is_file():
            content = path.read_bytes()
            leaks += [f"stored output {path.name}: {m!r}" for m in markers
                      if m.encode() in content]
    assert not leaks, "\n".join(leaks)


def _outside_events(run: HostileRun) -> list[str]:
    outside = run.data.outside.resolve()
    found = []
    for command, event in run.events():
        real = _real(event)
        if real.is_relative_to(outside):
            found.append(f"{command}: {event['event']} {event['path']!r} → {real}")
    return sorted(set(found))


def _real(event: dict[str, Any]) -> Path:
    path = Path(event["cwd"], event["path"])
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return Path(os.path.abspath(path))


@pytest.mark.slow
def test_no_command_opens_or_lists_anything_outside_the_dataset(hostile_run: HostileRun) -> None:
    manifest = (hostile_run.data.root / "manifest.csv").resolve()
    assert any(_real(e) == manifest for _, e in hostile_run.events()), (
        "the audit hook saw no open of the manifest: it is not recording")
    found = _outside_events(hostile_run)
    assert not found, "opened or listed outside the dataset:\n" + "\n".join(found)


@pytest.mark.slow
def test_no_outside_file_is_read_by_any_process(hostile_run: HostileRun) -> None:
    if not hostile_run.atime_tracked:
        pytest.skip("this filesystem does not update access times (noatime)")
    read = [f"{path.name} (atime moved to {time.ctime(path.stat().st_atime)})"
            for path, before in hostile_run.atimes.items()
            if path != hostile_run.data.shared_inode and path.stat().st_atime_ns != before]
    assert not read, "read from outside the dataset: " + ", ".join(read)


@pytest.mark.slow
def test_the_outside_folder_is_left_unchanged(hostile_run: HostileRun) -> None:
    after = _snapshot(hostile_run.data.outside)
    changed = sorted(k for k in after.keys() | hostile_run.outside_before.keys()
                     if after.get(k) != hostile_run.outside_before.get(k))
    assert not changed, f"changed, added or removed outside the dataset: {changed}"


@pytest.mark.slow
def test_the_oversized_file_is_refused_without_being_opened(hostile_run: HostileRun) -> None:
    huge = hostile_run.data.huge_file.resolve()
    opened = sorted({command for command, e in hostile_run.events()
                     if e["event"] == "open" and _real(e) == huge})
    assert not opened, f"{huge.name} ({huge.stat().st_size} bytes) was opened by " + \
        ", ".join(opened)


# -- the report ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_report_lists_every_failed_request_with_its_reason(hostile_run: HostileRun) -> None:
    assert hostile_run.report_html is not None, hostile_run.commands["report"].explain()
    page = hostile_run.report_html.read_text()
    failed = hostile_run.tables.get("__requests__", pd.DataFrame(columns=["status"]))
    assert (failed["status"] == "failed").any(), "the ledger has no failed request to list"
    missing = []
    for task in TASKS:
        frame = hostile_run.requests(task)
        for row in frame[frame["status"] == "failed"].itertuples(index=False):
            shown = {str(row.product_id), html.escape(str(row.product_id))}
            if not any(s in page for s in shown):
                missing.append(f"{task}: {row.product_id!r} not shown")
            elif isinstance(row.error_reason, str) and row.error_reason not in page:
                missing.append(f"{task}: reason {row.error_reason!r} not shown")
    missing = sorted(set(missing))
    assert not missing, f"{len(missing)} failures not in the report:\n" + "\n".join(missing)


class _ActiveContent(HTMLParser):
    """Event-handler attributes and script text in a page, as a browser would parse them."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [f"<{tag} {name}={value!r}>" for name, value in attrs
                       if name.startswith("on")]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and "alert(" in data:
            self.found.append(f"<script>{data[:80]}")


@pytest.mark.slow
def test_the_report_shows_product_text_as_text_not_markup(hostile_run: HostileRun) -> None:
    assert hostile_run.report_html is not None, hostile_run.commands["report"].explain()
    page = hostile_run.report_html.read_text()
    assert "html-title" in page, "the product with HTML in its category is not in the report"
    parser = _ActiveContent()
    parser.feed(page)
    assert not parser.found, ("product text became live markup in the report: "
                              + ", ".join(sorted(set(parser.found))))


# -- files that never end or never answer --------------------------------------------------------


def _cap_memory() -> None:
    """A runaway read (a link to /dev/zero) fails with MemoryError instead of eating the
    machine; the process still gets its own session, as :func:`started` gives it."""
    limit = 3 * 1024**3
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


@pytest.mark.slow
def test_a_fifo_and_a_link_to_dev_zero_fail_alone_without_hanging(tmp_path: Path) -> None:
    expected = write_special_files_dataset(tmp_path / "dataset")
    spec = tmp_path / "special.yaml"
    spec.write_text(yaml.safe_dump({"name": "special", "task": "enhance",
                                    "dataset": str(tmp_path / "dataset"),
                                    "models": ["local:autoenhance"], "concurrency": 2}))
    command = _pixellab(tmp_path, tmp_path / "open.log", "sweep", "run", str(spec), "--home",
                        str(tmp_path / "home"), timeout=90, preexec_fn=_cap_memory)
    exit_code = command.returncode
    assert exit_code == 0, command.explain()
    frame = Ledger(tmp_path / "home" / "ledger.duckdb", read_only=True).query(
        "select product_id, status, error_reason from requests")
    got = {r.product_id: (r.status, r.error_reason if isinstance(r.error_reason, str) else None)
           for r in frame.itertuples(index=False)}
    assert got == {pid: ("succeeded", None) if reason is None else ("failed", reason)
                   for pid, reason in expected.items()}
