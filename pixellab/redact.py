"""Remove secrets from any text before it reaches a log, the ledger, a notebook or a report.

Two layers: the values of the provider key variables actually set in this environment (exact
match, strongest), and the shapes of well-known tokens (``sk-…``, ``r8_…``, ``whsec_…``, bearer
headers, ``key=`` query parameters) for keys we were never told about.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

SECRET_ENV_VARS = (
    "REPLICATE_API_TOKEN",
    "FAL_KEY",
    "FAL_KEY_SECRET",
    "OPENAI_API_KEY",
    "PIXELLAB_WEBHOOK_SECRET",
    "REPLICATE_WEBHOOK_SECRET",
)
MASK = "[REDACTED]"

_TOKENS = re.compile(
    r"sk-(?:proj-)?[A-Za-z0-9_\-]{16,}|r8_[A-Za-z0-9]{20,}|whsec_[A-Za-z0-9+/=]{16,}"
)
# A credential after a scheme word or in a query parameter: keep the prefix, mask the value.
_PREFIXED = re.compile(
    r"(?i)(\b(?:bearer|token|key)\s+|[?&](?:key|token|api_key|secret|signature)=)"
    r"([A-Za-z0-9._\-+/=:]{12,})"
)


def redact(text: str | None) -> str | None:
    """``text`` with every known secret value and token shape replaced by ``[REDACTED]``."""
    if not text:
        return text
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 6:
            text = text.replace(value, MASK)
    text = _TOKENS.sub(MASK, text)
    return _PREFIXED.sub(lambda m: m.group(1) + MASK, text)


def display_url(url: str) -> str:
    """The URL as messages show it: no userinfo, token-like query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url) or url
    if parts.username is not None or parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[-1]
        url = parts._replace(netloc=netloc).geturl()
    return redact(url) or url
