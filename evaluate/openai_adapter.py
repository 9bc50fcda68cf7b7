"""``openai:URL#MODEL``: any OpenAI-compatible chat/completions server, standard library only.

Images travel as ``data:`` URLs (the TSV's base64 is sent as is, no re-encoding). Requests run
concurrently in a thread pool; 429, 5xx, connection errors and timeouts are retried with
exponential backoff (honouring ``Retry-After``); other 4xx fail at once. The API key is read
from an environment variable (``OPENAI_API_KEY`` unless ``key_env=`` says otherwise); no key
means no ``Authorization`` header (local servers such as vLLM need none).

A call that still fails after all retries yields an ``Output`` with ``error`` set: it is not
scored as an answer and is retried when the run is resumed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .adapters import Output, safe_name
from .data import Item

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class APIError(RuntimeError):
    """A request that failed for good (non-retryable status, or retries exhausted)."""


def endpoint(url: str) -> str:
    """``.../v1`` -> ``.../v1/chat/completions``; a full endpoint URL is kept as is."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


class OpenAIModel:
    """Chat-completions client with a thread pool, retries, backoff and timeouts."""

    def __init__(self, url: str, model: str, workers: int = 8, timeout: float = 120.0,
                 retries: int = 5, key_env: str = "OPENAI_API_KEY", max_tokens: int = 256,
                 batch_size: int = 32, backoff: float = 1.0, max_backoff: float = 60.0) -> None:
        self.url = endpoint(url)
        self.model = model
        self.name = safe_name(model)
        self.workers = workers
        self.timeout = timeout
        self.retries = retries
        self.key_env = key_env
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.backoff = backoff
        self.max_backoff = max_backoff

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def payload(self, prompt: str, image_url: str | None = None) -> dict[str, Any]:
        """The request body: image (if any) first, then the prompt text; greedy decoding."""
        content: list[dict[str, Any]] = []
        if image_url is not None:
            content.append({"type": "image_url", "image_url": {"url": image_url}})
        content.append({"type": "text", "text": prompt})
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * (2**attempt) * (1 + random.random() * 0.25)
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        time.sleep(min(delay, self.max_backoff))

    def post(self, body: dict[str, Any]) -> str:
        """POST with retries; return the first choice's message text."""
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url, data=data, headers=self._headers(),
                                         method="POST")
            retry_after = None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    reply = json.loads(resp.read().decode("utf-8"))
                return _message_text(reply)
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}: {err.read()[:200]!r}"
                if err.code not in RETRY_STATUS:
                    raise APIError(last) from err
                retry_after = err.headers.get("Retry-After") if err.headers else None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = f"{type(err).__name__}: {err}"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
                last = f"malformed response: {type(err).__name__}: {err}"
            if attempt < self.retries:
                log.warning("request failed (%s); retry %d/%d", last, attempt + 1, self.retries)
                self._sleep(attempt, retry_after)
        raise APIError(f"gave up after {self.retries + 1} attempts: {last}")

    def chat(self, prompt: str) -> str:
        """Text-only call (used by the judge); API failures come back as VLMEvalKit's marker."""
        try:
            return self.post(self.payload(prompt))
        except APIError as err:
            return f"Failed to obtain answer via API. {err}"

    def _one(self, item: Item, prompt: str) -> Output:
        url = f"data:{item.image_mime()};base64,{item.image_b64}"
        try:
            return Output(reply=self.post(self.payload(prompt, url)))
        except APIError as err:
            return Output(error=str(err))

    def predict(self, items: list[Item], prompts: list[str]) -> list[Output]:
        """Send the batch concurrently; results come back in item order."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self._one, items, prompts))


def _message_text(reply: dict[str, Any]) -> str:
    """The text of ``choices[0].message.content`` (string or list-of-parts form)."""
    content = reply["choices"][0]["message"].get("content") or ""
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)
