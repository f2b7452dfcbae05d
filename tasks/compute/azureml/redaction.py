"""Credentials out of text: every log line, error and result the Azure ML backend passes on
goes through :func:`redact` first."""

from __future__ import annotations

import re

_SECRET_PATTERNS = (
    re.compile(r"(sig=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"((?:Account|Shared)Key=)[^;\s\"']+", re.IGNORECASE),
    re.compile(r"(Bearer )[A-Za-z0-9._~+/=-]+"),
)


def redact(text: str) -> str:
    """``text`` with SAS signatures, account keys and bearer tokens replaced by ``***``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text
