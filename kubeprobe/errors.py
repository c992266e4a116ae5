"""Errors as the one line a report row or the exit line can carry."""
from __future__ import annotations

from kubernetes.client.rest import ApiException


def one_line(exc: BaseException, limit: int = 200) -> str:
    """`Type: message` on one line (an ApiException's str() spans several: headers, body)."""
    if isinstance(exc, ApiException) and exc.status:
        text = f"HTTP {exc.status} {exc.reason or ''}".strip()
    else:
        text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__
