"""Spend governance: daily and monthly caps over every paid call on one ledger, held across
processes, and alerts that fire once per threshold to a real webhook receiver and a real SMTP
server, both on 127.0.0.1, carrying no secret.

Paid calls here are a local model given a price in a test catalog (local models cost their
catalog price), so the caps are exercised by real sweeps without a provider key."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from standardwebhooks import Webhook

from pixellab.catalog import load_catalog
from pixellab.errors import ConfigError
from pixellab.ledger.spend import SpendBook
from pixellab.spend import SpendGovernor, SpendPolicy, book_path, load_spend_policy
from pixellab.sweep import Sweep, SweepSpec
from pixellab.workbench import Workbench
from tests.conftest import started, write_dataset

SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy1vbmx5LTEyMzQ1Njc4OTA="  # base64 of a test secret
API_KEY = "sk-never-in-an-alert-" + "k" * 20
PAID = ('[models."local:paid"]\ntasks = ["enhance"]\nendpoint = "autoenhance"\n'
        'pricing = { usd_per_unit = 0.05 }\n')


# -- loopback receivers ----------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers ``status`` and keeps what it got."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/spend"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with socket.socket() as probe:  # aiosmtpd connects to its own port to check it is up
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def home_with(tmp_path: Path, policy: str) -> Path:
    home = tmp_path / "home"
    (home / "catalog").mkdir(parents=True)
    (home / "catalog" / "paid.toml").write_text(PAID)
    (home / "spend.toml").write_text(policy)
    return home


def paid_sweep(home: Path, dataset: Path, name: str, seed: int = 0,
               project: str | None = None) -> Any:
    workbench = Workbench(home)
    spec = {"name": name, "task": "enhance", "dataset": str(dataset), "models": ["local:paid"],
            "seeds": [seed], "concurrency": 1, **({"project": project} if project else {})}
    return Sweep(SweepSpec.parse(spec), workbench).run(score=False), workbench


# -- caps ------------------------------------------------------------------------------------


def test_the_call_that_would_cross_a_cap_is_refused_in_one_line_with_nothing_spent(
        tmp_path: Path) -> None:
    home = home_with(tmp_path, "[caps]\ndaily_usd = 0.12\n[alerts]\nthresholds = []\n")
    dataset = write_dataset(tmp_path / "ds", n=4)
    result, workbench = paid_sweep(home, dataset, "a")
    assert result.succeeded == 2 and result.stopped == 2
    assert result.stopped_reason == ("daily usd cap (total) $0.12 would be exceeded: spent "
                                     "$0.10, in flight $0.00, next call $0.05; nothing was spent")
    spent = workbench.ledger.scalar("select sum(usd) from costs")
    assert spent == Decimal("0.10")
    assert SpendBook(book_path(workbench.ledger.path)).totals(0) == (Decimal("0.1"), 0)


def test_two_processes_sweeping_at_once_never_exceed_a_daily_cap(tmp_path: Path) -> None:
    """Two sweeps of 12 different $0.05 calls each start together on one ledger under a $0.40
    daily cap: exactly 8 calls are made between them, and the ledger agrees with the book."""
    home = home_with(tmp_path, "[caps]\ndaily_usd = 0.40\n[alerts]\nthresholds = []\n")
    dataset = write_dataset(tmp_path / "ds", n=12)
    script = ("import sys\nfrom pixellab.sweep import Sweep, SweepSpec\n"
              "from pixellab.workbench import Workbench\n"
              "name, seed = sys.argv[1], int(sys.argv[2])\n"
              f"spec = SweepSpec.parse({{'name': name, 'task': 'enhance', "
              f"'dataset': {str(dataset)!r}, 'models': ['local:paid'], 'seeds': [seed], "
              "'concurrency': 2})\n"
              f"r = Sweep(spec, Workbench({str(home)!r})).run(score=False)\n"
              "print(r.succeeded, r.stopped, r.stopped_reason)\n")
    with started([sys.executable, "-c", script, "one", "1"], stdout=-1, stderr=-1) as one, \
            started([sys.executable, "-c", script, "two", "2"], stdout=-1, stderr=-1) as two:
        outs = [process.communicate(timeout=300) for process in (one, two)]
        assert one.returncode == 0 and two.returncode == 0, outs
    made = [int(out.split()[0]) for out, _ in outs]
    assert sum(made) == 8, outs
    assert all("daily usd cap (total) $0.40 would be exceeded" in out for out, _ in outs)
    workbench = Workbench(home)
    assert workbench.ledger.scalar("select sum(usd) from costs") == Decimal("0.40")
    assert workbench.ledger.scalar("select count(*) from attempts where status = 'succeeded'") == 8
    assert SpendBook(book_path(workbench.ledger.path)).totals(0)[0] == Decimal("0.4")


def test_a_project_cap_holds_its_project_only(tmp_path: Path) -> None:
    home = home_with(tmp_path, "[projects.growth]\ndaily_usd = 0.10\n"
                               "[alerts]\nthresholds = []\n")
    dataset = write_dataset(tmp_path / "ds", n=3)
    growth, _ = paid_sweep(home, dataset, "g", project="growth")
    other, _ = paid_sweep(home, dataset, "o", seed=1, project="catalog-team")
    assert (growth.succeeded, growth.stopped) == (2, 1)
    assert "project 'growth'" in (growth.stopped_reason or "")
    assert (other.succeeded, other.stopped) == (3, 0)


def test_free_calls_never_touch_the_book(tmp_path: Path) -> None:
    home = home_with(tmp_path, "[caps]\ndaily_usd = 0.01\n")
    dataset = write_dataset(tmp_path / "ds", n=2)
    workbench = Workbench(home)
    result = Sweep(SweepSpec.parse({"name": "free", "task": "enhance", "dataset": str(dataset),
                                    "models": ["local:autoenhance"]}), workbench).run(score=False)
    assert result.succeeded == 2
    assert SpendBook(book_path(workbench.ledger.path)).totals(0) == (0, 0)


def test_a_reservation_left_by_a_dead_process_counts_at_its_estimate(tmp_path: Path) -> None:
    """A killed sweep's call may have billed: its reservation is settled at the estimate (the
    cap errs on the side of spending less), not dropped."""
    book = SpendBook(tmp_path / "ledger.spend.sqlite")
    governor = SpendGovernor(book, SpendPolicy.model_validate(
        {"caps": {"daily_usd": 1}, "alerts": {"thresholds": []}}))
    with started([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        held = governor.reserve(0.3, 0)
        book_con_pid = child.pid
    import sqlite3

    con = sqlite3.connect(book.path)
    con.execute("update spend set pid = ? where id = ?", [book_con_pid, held])
    con.commit()
    con.close()
    governor.reserve(0.1, 0)  # looks, settles the dead one
    rows = sqlite3.connect(book.path).execute(
        "select state, usd_micros from spend order by usd_micros").fetchall()
    assert rows == [("reserved", 100_000), ("settled", 300_000)]


# -- alerts ----------------------------------------------------------------------------------


def test_each_threshold_alerts_once_to_the_webhook_and_by_mail_and_carries_no_secret(
        tmp_path: Path, receiver: Receiver, mailbox: tuple[Mailbox, int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    box, port = mailbox
    monkeypatch.setenv("PIXELLAB_ALERT_SECRET", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    home = home_with(tmp_path, f"""
[caps]
daily_usd = 0.20
[alerts]
thresholds = [0.5, 1.0]
anomaly_factor = 0
webhook_url = "{receiver.url}"
webhook_secret_env = "PIXELLAB_ALERT_SECRET"
[alerts.smtp]
host = "127.0.0.1"
port = {port}
from = "pixellab@example.test"
to = ["leads@example.test"]
""")
    dataset = write_dataset(tmp_path / "ds", n=6)
    first, workbench = paid_sweep(home, dataset, "a")
    again, _ = paid_sweep(home, dataset, "b", seed=1)  # the cap is spent: nothing new to say
    assert (first.succeeded, first.stopped, again.succeeded) == (4, 2, 0)

    assert len(receiver.received) == 2 and len(box.messages) == 2
    verifier = Webhook(SECRET)
    payloads = [verifier.verify(body, headers) for headers, body in receiver.received]
    assert [p["pixellab"]["threshold"] for p in payloads] == [0.5, 1.0]
    assert payloads[1]["text"].startswith("pixellab spend: 100 % of the daily usd cap (total)")
    assert "$0.20 of $0.20" in payloads[1]["text"]
    assert b"100 % of the daily usd cap" in box.messages[1]
    everything = b"".join(body for _, body in receiver.received) + b"".join(box.messages)
    notices = SpendBook(book_path(workbench.ledger.path)).notices()
    everything += json.dumps([n.__dict__ for n in notices]).encode()
    for secret in (SECRET, SECRET.removeprefix("whsec_"), API_KEY):
        assert secret.encode() not in everything
    assert [(n.kind, n.status) for n in notices] == [("threshold", "delivered")] * 2
    assert all("webhook: HTTP 200" in (n.detail or "") and "email: SMTP 250" in (n.detail or "")
               for n in notices)


def test_a_receiver_that_fails_is_retried_then_recorded_and_the_sweep_goes_on(
        tmp_path: Path) -> None:
    failing = Receiver(status=503)
    try:
        home = home_with(tmp_path, f'[caps]\ndaily_usd = 0.10\n[alerts]\nthresholds = [1.0]\n'
                                   f'anomaly_factor = 0\nwebhook_url = "{failing.url}"\n')
        dataset = write_dataset(tmp_path / "ds", n=2)
        result, workbench = paid_sweep(home, dataset, "a")
    finally:
        failing.close()
    assert result.succeeded == 2
    assert len(failing.received) == 4  # the first try and three retries, one webhook-id
    assert len({headers["webhook-id"] for headers, _ in failing.received}) == 1
    [notice] = SpendBook(book_path(workbench.ledger.path)).notices()
    assert (notice.status, notice.detail, notice.attempts) == ("failed", "webhook: HTTP 503", 4)


def test_thresholds_crossed_together_send_one_message_naming_the_highest(
        tmp_path: Path, receiver: Receiver) -> None:
    governor = SpendGovernor(SpendBook(tmp_path / "b.sqlite"), SpendPolicy.model_validate({
        "caps": {"daily_usd": 1}, "alerts": {"thresholds": [0.5, 0.8, 1.0],
                                             "anomaly_factor": 0, "webhook_url": receiver.url}}))
    governor.settle(governor.reserve(0.85, 0), 0.85, 0)
    governor.flush()
    assert [json.loads(b)["pixellab"]["threshold"] for _, b in receiver.received] == [0.8]
    statuses = {n.key.rsplit(":", 1)[1]: n.status for n in governor.book.notices()}
    assert statuses == {"50": "covered", "80": "delivered"}


def test_a_spend_rate_anomaly_alerts_once_per_hour(tmp_path: Path, receiver: Receiver) -> None:
    """A day of $0.10 hours, then $2 in the last hour: 20× the median hour, over the $1 floor."""
    governor = SpendGovernor(SpendBook(tmp_path / "b.sqlite"), SpendPolicy.model_validate({
        "alerts": {"thresholds": [], "anomaly_factor": 3, "anomaly_min_usd": 1,
                   "webhook_url": receiver.url}}))
    now = 1_800_000_000.0
    for hour in range(1, 25):
        at = now - 3600 * hour - 1800
        governor.book.settle(governor.reserve(0.10, 0, now=at), usd=0.10, credits=0)
    assert governor.check_alerts(now=now - 3600) == []  # steady: nothing unusual
    for minute in range(4):
        governor.book.settle(governor.reserve(0.5, 0, now=now - 600 + minute), usd=0.5,
                             credits=0)
    [sent] = governor.check_alerts(now=now)
    assert sent.kind == "anomaly" and "$2.00 in the last hour" in sent.title
    assert governor.check_alerts(now=now + 60) == []  # once for this hour
    governor.flush()
    assert len(receiver.received) == 1


def test_the_daily_summary_is_sent_once_a_day(tmp_path: Path, receiver: Receiver) -> None:
    governor = SpendGovernor(SpendBook(tmp_path / "b.sqlite"), SpendPolicy.model_validate({
        "caps": {"daily_usd": 5}, "alerts": {"thresholds": [], "webhook_url": receiver.url}}),
        project="growth")
    governor.settle(governor.reserve(0.25, 10), 0.25, 10)
    message = governor.send_summary()
    assert message is not None and governor.send_summary() is None
    governor.flush()
    [(_, body)] = receiver.received
    text = json.loads(body)["text"]
    assert "growth: $0.25, 10.00 credits, 1 paid calls" in text
    assert "daily usd cap (total) for" in text and "$0.25 of $5.00" in text


# -- the policy file -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "key"), [
    ("[alerts]\nthresholds = [1.5]\n", "alerts.thresholds"),
    ("[caps]\ndaily_usd = -3\n", "caps.daily_usd"),
    ('timezone = "Mars/Olympus"\n', "timezone"),
    ("[caps]\ndaily_dollars = 3\n", "caps.daily_dollars"),
    ('[alerts]\nwebhook_url = "file:///etc/passwd"\n', "alerts.webhook_url"),
])
def test_a_malformed_policy_is_one_error_naming_the_key(tmp_path: Path, text: str,
                                                       key: str) -> None:
    path = tmp_path / "spend.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_spend_policy(path)
    assert caught.value.key == key and "spend.toml" in str(caught.value)


def test_a_day_begins_at_midnight_in_the_policy_time_zone(tmp_path: Path) -> None:
    governor = SpendGovernor(SpendBook(tmp_path / "b.sqlite"), SpendPolicy.model_validate(
        {"timezone": "America/New_York", "caps": {"daily_usd": 1}}))
    # 2026-12-06 03:00 UTC is still 2026-12-05 in New York (UTC-5)
    start, label = governor.period_start("day", 1796526000.0)
    assert label == "2026-12-05" and start == 1796446800.0
    assert governor.period_start("month", 1796526000.0)[1] == "2026-12"


def test_without_a_policy_nothing_is_reserved(tmp_path: Path) -> None:
    workbench = Workbench(tmp_path / "h", catalog=load_catalog())
    assert workbench.spend_governor() is None
    assert not book_path(workbench.ledger.path).exists()


def test_the_spend_command_shows_each_cap_and_the_alerts(tmp_path: Path) -> None:
    from tests.test_cli import pixellab as run_cli

    home = home_with(tmp_path, "[caps]\ndaily_usd = 0.10\nmonthly_usd = 2\n"
                               "[alerts]\nthresholds = [1.0]\nanomaly_factor = 0\n")
    paid_sweep(home, write_dataset(tmp_path / "ds", n=2), "a")
    done = run_cli("spend", "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert "daily usd cap (total)" in done.stdout and "100.0" in done.stdout
    assert "monthly usd cap (total)" in done.stdout and "5.0" in done.stdout
    assert "unsent" in done.stdout  # no webhook or smtp configured: claimed, not sent
    summary = run_cli("spend", "--home", str(home), "--summary")
    assert "default: $0.10, 0.00 credits, 2 paid calls" in summary.stdout
