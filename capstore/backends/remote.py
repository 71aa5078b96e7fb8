"""Calling remote APIs politely: bounded concurrency, per-request timeout, retries with backoff.

Retried: HTTP 429 (honouring ``Retry-After``), 5xx, time-outs and dropped connections, with
exponential backoff and full jitter. Not retried: other 4xx and malformed responses. A request that
still fails becomes ``Generation(error=…, error_kind=…)``: recorded as an error of its item by the
caller, never cached, never stored as a caption.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from capstore.backends.base import Generation
from capstore.errors import first_line

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    timeout: float = 60.0
    concurrency: int = 8


def _classify(exc: Exception) -> tuple[str, bool, float | None]:
    """(error kind, retryable, Retry-After seconds) of an exception from the openai client."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout", True, None
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry_after = None
        header = exc.response.headers.get("retry-after") if exc.response is not None else None
        if header:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        if status == 429:
            return "http_429", True, retry_after
        if status >= 500:
            return f"http_{status}", True, retry_after
        return f"http_{status}", False, None
    if isinstance(exc, openai.APIConnectionError):
        return "connection", True, None
    return "malformed_response", False, None


def call_with_retries(fn: Callable[[], Generation], policy: RetryPolicy,
                      sleep: Callable[[float], None] = time.sleep) -> Generation:
    """Run ``fn`` until it succeeds, fails for good, or runs out of attempts."""
    for attempt in range(1, policy.max_attempts + 1):
        try:
            result = fn()
            result.extra["attempts"] = attempt
            return result
        except Exception as exc:  # classified below; anything unknown is a final failure
            kind, retryable, retry_after = _classify(exc)
            message = first_line(exc)
            if not retryable or attempt == policy.max_attempts:
                return Generation(error=f"{kind} after {attempt} attempt(s): {message}", error_kind=kind,
                                  extra={"attempts": attempt})
            backoff = random.uniform(0, min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1)))
            sleep(min(policy.max_delay, retry_after) if retry_after is not None else backoff)
    raise AssertionError("unreachable")


def run_concurrently(fns: Sequence[Callable[[], Generation]], policy: RetryPolicy) -> list[Generation]:
    """Each request with retries, at most ``policy.concurrency`` in flight; results in order."""
    with ThreadPoolExecutor(max_workers=max(1, policy.concurrency)) as pool:
        return list(pool.map(lambda f: call_with_retries(f, policy), fns))


def make_client(base_url: str | None, api_key: str | None, timeout: float):  # -> openai.OpenAI
    """An openai client that does not retry by itself (we do), against any compatible base URL."""
    import os

    import openai

    key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"  # local servers accept any key
    return openai.OpenAI(base_url=base_url or os.environ.get("OPENAI_BASE_URL"), api_key=key,
                         timeout=timeout, max_retries=0)
