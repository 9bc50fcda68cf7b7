"""``openai:URL#MODEL``: any OpenAI-compatible chat/completions server, standard library only.

Images travel as ``data:`` URLs (the TSV's base64 is sent as is, no re-encoding). Requests run
concurrently in a thread pool; 429, 5xx, connection errors, timeouts and malformed answers are
retried with exponential backoff (honouring ``Retry-After``); other 4xx fail at once. The API
key is read from an environment variable (``OPENAI_API_KEY`` unless ``key_env=`` says
otherwise); no key means no ``Authorization`` header (local servers such as vLLM need none).

``timeout`` bounds the whole request (connect, send, headers and body), not each socket read:
a watchdog shuts the socket down at the deadline, so a server that trickles bytes cannot hold a
worker longer than ``timeout``. Requests go straight to the URL (``http.client``; proxy
environment variables are not used).

A call that still fails after all retries, or whose 200 answer is malformed (a ``message`` that
is not an object, a body that is not UTF-8 JSON, a body shorter than its ``Content-Length``),
yields an ``Output`` with ``error`` set: it is reported as ``api_failed`` (apart from wrong
answers) and retried when the run is resumed.

``mode=loglik`` asks for one token (``max_tokens: 1``) with ``logprobs`` and ``top_logprobs``
(vLLM, SGLang and LMDeploy return them); the option letter with the highest log-probability
among the returned top tokens (``"A"`` or ``" A"``) wins, as ``hf:``'s loglik does. A letter
absent from the top list scores ``-inf``. A server that returns no logprobs stops the run with
``LogprobsUnsupported``.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .adapters import Output, safe_name
from .data import Item

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
T = TypeVar("T")
TOP_LOGPROBS = 20  # OpenAI's maximum; vLLM's default --max-logprobs is 20 as well


class LogprobsUnsupported(ValueError):
    """The server answered without logprobs: ``mode=loglik`` cannot work with it."""


class MalformedResponse(ValueError):
    """A 200 answer that is not the chat/completions schema."""


class RequestTimeout(TimeoutError):
    """The whole request took longer than ``timeout``."""


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
                 batch_size: int = 32, backoff: float = 1.0, max_backoff: float = 60.0,
                 mode: str = "generate") -> None:
        if mode not in ("generate", "loglik"):
            raise ValueError(f"openai: mode must be 'generate' or 'loglik', not {mode!r}")
        self.url = endpoint(url)
        self.model = model
        self.mode = mode
        self.name = safe_name(model) if mode == "generate" else f"{safe_name(model)}-loglik"
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

    def request(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        """One POST whose total duration is bounded by ``timeout``: (status, headers, body)."""
        parts = urlsplit(self.url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname or "localhost", parts.port, timeout=self.timeout)
        expired = threading.Event()
        held: list[socket.socket] = []  # the response may take the socket over from conn

        def cut() -> None:
            expired.set()
            for sock in held:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(self.timeout, cut)
        watchdog.daemon = True
        watchdog.start()
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.connect()
            held.append(conn.sock)
            if expired.is_set():  # the deadline passed while connecting
                raise RequestTimeout(f"request took longer than timeout={self.timeout:g}s")
            conn.request("POST", path, body=data, headers=self._headers())
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        except (OSError, http.client.HTTPException) as err:
            if expired.is_set():
                raise RequestTimeout(f"request took longer than timeout={self.timeout:g}s") \
                    from err
            raise
        finally:
            watchdog.cancel()
            conn.close()

    def post_json(self, body: dict[str, Any],
                  interpret: Callable[[dict[str, Any]], T] = lambda a: a) -> T:
        """POST with retries; return ``interpret`` of the parsed answer (a dict with
        ``choices[0]``). A malformed answer (``MalformedResponse``, also from ``interpret``) is
        retried like a server error."""
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            retry_after = None
            try:
                status, headers, raw = self.request(data)
                if status >= 400:
                    last = f"HTTP {status}: {raw[:200]!r}"
                    if status not in RETRY_STATUS:
                        raise APIError(last)
                    retry_after = headers.get("retry-after")
                else:
                    return interpret(_parse_answer(raw))
            except http.client.IncompleteRead as err:
                last = f"malformed response: body shorter than announced ({len(err.partial)} " \
                       "bytes)"
            except MalformedResponse as err:
                last = f"malformed response: {err}"
            except (OSError, http.client.HTTPException) as err:
                last = f"{type(err).__name__}: {err}"
            if attempt < self.retries:
                log.warning("request failed (%s); retry %d/%d", last, attempt + 1, self.retries)
                self._sleep(attempt, retry_after)
        raise APIError(f"gave up after {self.retries + 1} attempts: {last}")

    def post(self, body: dict[str, Any]) -> str:
        """POST with retries; return the first choice's message text."""
        return self.post_json(body, _message_text)

    def chat(self, prompt: str) -> str:
        """Text-only call (used by the judge); API failures come back as VLMEvalKit's marker."""
        try:
            return self.post(self.payload(prompt))
        except (APIError, MalformedResponse) as err:
            return f"Failed to obtain answer via API. {err}"

    def _one(self, item: Item, prompt: str) -> Output:
        url = f"data:{item.image_mime()};base64,{item.image_b64}"
        body = self.payload(prompt, url)
        try:
            if self.mode == "loglik":
                body.update(max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS)
                return self.post_json(body, lambda a: letter_from_logprobs(a, item.options))
            return Output(reply=self.post(body))
        except LogprobsUnsupported:
            raise
        except Exception as err:  # one item's failure must never end the run
            return Output(error=f"{type(err).__name__}: {err}"[:500])

    def predict(self, items: list[Item], prompts: list[str]) -> list[Output]:
        """Send the batch concurrently; results come back in item order."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self._one, items, prompts))


def _parse_answer(raw: bytes) -> dict[str, Any]:
    """The decoded answer, checked to hold ``choices[0]`` as an object."""
    try:
        answer = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise MalformedResponse(f"body is not UTF-8 ({err.reason} at byte {err.start})") from err
    except ValueError as err:
        raise MalformedResponse(f"body is not JSON ({err}): {raw[:80]!r}") from err
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse(f"no choices[0] object in {raw[:120]!r}")
    return answer


def _message_text(answer: dict[str, Any]) -> str:
    """The text of ``choices[0].message.content`` (string or list-of-parts form)."""
    message = answer["choices"][0].get("message")
    if not isinstance(message, dict):
        raise MalformedResponse(f"choices[0].message is {type(message).__name__}, not an object")
    content = message.get("content") or ""
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    elif not isinstance(content, str):
        raise MalformedResponse(f"message content is {type(content).__name__}")
    return content


def letter_from_logprobs(answer: dict[str, Any], options: dict[str, str]) -> Output:
    """The option letter with the highest log-probability among the first token's top list."""
    logprobs = answer["choices"][0].get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        raise LogprobsUnsupported(
            "the server returned no logprobs for the answer token; openai: mode=loglik needs "
            "a server that supports 'logprobs'/'top_logprobs' (vLLM, SGLang, LMDeploy; for vLLM "
            f"allow at least --max-logprobs {TOP_LOGPROBS}); use mode=generate otherwise")
    first = content[0] if isinstance(content[0], dict) else {}
    top = first.get("top_logprobs") or []
    scores = {letter: -math.inf for letter in options}
    for entry in [first, *top]:
        if not isinstance(entry, dict):
            continue
        token, value = str(entry.get("token", "")).strip(), entry.get("logprob")
        if token in scores and isinstance(value, (int, float)):
            scores[token] = max(scores[token], float(value))
    if all(v == -math.inf for v in scores.values()):
        letter = "Z"  # no option letter among the top tokens: counted wrong
    else:
        letter = max(scores, key=lambda k: scores[k])
    finite = {k: v for k, v in scores.items() if v != -math.inf}
    return Output(letter=letter, method="loglik", scores=finite,
                  reply=str(first.get("token", "")))
