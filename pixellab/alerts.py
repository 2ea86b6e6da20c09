"""Delivering a spend notice: a Slack-compatible JSON webhook signed with Standard Webhooks,
and/or an e-mail over SMTP.

What is sent is built from amounts, cap names, project labels and model ids only; the text
still goes through :func:`~pixellab.redact.redact` on the way out, and the credentials (the
webhook's signing secret, the SMTP login) are read from environment variables the spend
policy names, never from a file we write, and never appear in a message, a log line or the
book's record of the delivery (which keeps the HTTP status or the SMTP reply code only).

Signing follows the Standard Webhooks specification (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``) through its reference
library, ``standardwebhooks``, so any receiver that verifies Svix or Standard Webhooks
deliveries verifies ours. A webhook is retried on a connection error, a 429 or a 5xx with
backoff; a 4xx other than 429 is final (the receiver said no).
"""

from __future__ import annotations

import json
import os
import smtplib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx

from pixellab.redact import redact


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    secret_env: str | None = None
    """The environment variable holding the ``whsec_...`` signing secret; unsigned without."""
    timeout_s: float = 10.0
    attempts: int = 4


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False
    tls: bool = False
    username_env: str | None = None
    password_env: str | None = None
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Message:
    """One notice: ``key`` is unique per notice (the webhook id), ``fields`` are for machines."""

    key: str
    kind: str
    title: str
    lines: tuple[str, ...]
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return redact("\n".join((self.title, *self.lines))) or ""

    def payload(self) -> dict[str, Any]:
        """Slack's incoming-webhook shape (``text`` plus one ``section`` block) with our own
        fields beside it, which Slack ignores."""
        return {"text": self.text,
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": self.text}}],
                "pixellab": {"kind": self.kind, "key": self.key, **dict(self.fields)}}


@dataclass(frozen=True)
class Delivery:
    channel: str
    ok: bool
    detail: str
    attempts: int


def send_webhook(target: WebhookTarget, message: Message, *,
                 sleep: Callable[[float], None] = time.sleep) -> Delivery:
    """Post a notice's Slack-compatible payload (see :func:`post_signed`)."""
    return post_signed(target, message.key, message.payload(), sleep=sleep)


def post_signed(target: WebhookTarget, message_id: str, payload: Mapping[str, Any], *,
                sleep: Callable[[float], None] = time.sleep) -> Delivery:
    """POST ``payload`` as JSON, signed as Standard Webhooks when the target names a secret,
    with ``message_id`` as the ``webhook-id`` of every try; retried with backoff on a
    connection error, a 429 or a 5xx."""
    body = json.dumps(dict(payload), sort_keys=True).encode()
    headers = {"content-type": "application/json", "webhook-id": message_id}
    detail = "not sent"
    for attempt in range(1, target.attempts + 1):
        sent_at = datetime.now(UTC)
        headers["webhook-timestamp"] = str(int(sent_at.timestamp()))
        secret = os.environ.get(target.secret_env) if target.secret_env else None
        if secret:
            from standardwebhooks import Webhook

            headers["webhook-signature"] = Webhook(secret).sign(message_id, sent_at, body)
        try:
            response = httpx.post(target.url, content=body, headers=headers,
                                  timeout=target.timeout_s)
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}"
        else:
            detail = f"HTTP {response.status_code}"
            if response.is_success:
                return Delivery("webhook", True, detail, attempt)
            if response.status_code != 429 and response.status_code < 500:
                return Delivery("webhook", False, detail, attempt)
        if attempt < target.attempts:
            sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
    return Delivery("webhook", False, detail, target.attempts)


def send_email(target: SmtpTarget, message: Message) -> Delivery:
    email = EmailMessage()
    email["From"] = target.sender
    email["To"] = ", ".join(target.recipients)
    email["Subject"] = redact(message.title) or ""
    email["Message-ID"] = f"<{message.key.replace(':', '.')}@pixellab>"
    email.set_content(message.text)
    client: type[smtplib.SMTP] = smtplib.SMTP_SSL if target.tls else smtplib.SMTP
    try:
        with client(target.host, target.port, timeout=target.timeout_s) as smtp:
            if target.starttls:
                smtp.starttls()
            user = os.environ.get(target.username_env) if target.username_env else None
            password = os.environ.get(target.password_env) if target.password_env else None
            if user and password:
                smtp.login(user, password)
            refused = smtp.send_message(email)
    except smtplib.SMTPResponseException as exc:
        return Delivery("email", False, f"SMTP {exc.smtp_code}", 1)
    except (smtplib.SMTPException, OSError) as exc:
        return Delivery("email", False, type(exc).__name__, 1)
    if refused:
        return Delivery("email", False, f"{len(refused)} recipient(s) refused", 1)
    return Delivery("email", True, "SMTP 250", 1)
