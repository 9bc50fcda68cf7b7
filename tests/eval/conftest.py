"""Shared fixtures for the evaluator tests: small real PNGs, TSV writers, a tiny checkpoint."""

from __future__ import annotations

import base64
import csv
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

COLUMNS = ["index", "question", "A", "B", "C", "D", "E", "answer", "category",
           "clinical VQA task", "department", "perceptual granularity", "modality",
           "original task", "image"]


def png_b64(seed: int = 0, size: int = 32) -> str:
    """A small real PNG (random colours), base64-encoded like the published TSVs."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return base64.b64encode(buf.tobytes()).decode("ascii")


def write_tsv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    """Write rows as a GMAI-MMBench TSV; missing fields become empty cells."""
    columns = columns or COLUMNS
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return path


def make_rows(n: int, seed: int = 0, image: bool = True) -> list[dict[str, Any]]:
    """n synthetic questions with 2-5 options, cycling tasks/departments/modalities."""
    rng = np.random.default_rng(seed)
    tasks = ["Disease Diagnosis", "Organ Recognition - Abdomen", "Counting"]
    depts = ["Oncology (Medical)", "", "Urology"]
    rows = []
    for i in range(n):
        k = int(rng.integers(2, 6))
        labels = ["liver", "kidney", "spleen", "pancreas", "stomach"]
        row: dict[str, Any] = {
            "index": i,
            "question": f"Which organ is marked in image {i}?",
            "answer": "ABCDE"[int(rng.integers(0, k))],
            "category": labels[i % 5],
            "clinical VQA task": tasks[i % 3],
            "department": depts[i % 3],
            "perceptual granularity": "Image Level" if i % 2 else "Mask Level",
            "modality": "CT" if i % 4 else "MRI",
            "original task": "CLS_2D",
            "image": png_b64(i) if image else "",
        }
        for j in range(k):
            row["ABCDE"[j]] = labels[j]
        rows.append(row)
    return rows


@pytest.fixture
def tsv_factory(tmp_path: Path) -> Callable[..., Path]:
    """Write a TSV of ``n`` synthetic rows (or the given rows) under tmp_path."""

    def make(n: int = 12, rows: list[dict[str, Any]] | None = None, name: str = "toy_VAL.tsv",
             columns: list[str] | None = None) -> Path:
        return write_tsv(tmp_path / name, rows if rows is not None else make_rows(n), columns)

    return make


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA checkpoint saved with save_pretrained (built once per session)."""
    from gmai_eval.tiny_model import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llava", "llava")


Behaviour = Callable[[BaseHTTPRequestHandler, dict[str, Any], int], None]


class LoopbackServer:
    """A local HTTP server for the openai adapter's tests: each POST's JSON body and headers are
    recorded, then ``behaviour(handler, body, n)`` (n: 1-based request count) answers it."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.requests.append(body)
                    outer.headers.append(dict(self.headers))
                    n = len(outer.requests)
                try:
                    behaviour(self, body, n)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeouts are tested)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_json(handler: BaseHTTPRequestHandler, body: bytes, status: int = 200,
              length: int | None = None, headers: dict[str, str] | None = None) -> None:
    """Answer with ``body`` (``length`` overrides Content-Length, for short-body tests)."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)


def chat_answer(content: Any) -> bytes:
    """A chat/completions answer whose first choice's message content is ``content``."""
    return json.dumps({"choices": [{"message": {"role": "assistant",
                                                "content": content}}]}).encode()
