"""The openai adapter against a loopback HTTP server with canned replies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from conftest import LoopbackServer, chat_answer, send_json
from gmai_eval.cli import main
from gmai_eval.data import iter_items
from gmai_eval.openai_adapter import OpenAIModel


class FakeServer(LoopbackServer):
    """Answers chat/completions with ``reply``; the first ``fail_first`` requests get 500/429,
    and any path but /v1/chat/completions gets 404."""

    def __init__(self, reply: str = "The answer is (B)", fail_first: int = 2) -> None:
        self.reply = reply
        self.fail_first = fail_first

        def answer(handler: BaseHTTPRequestHandler, body: dict[str, Any], n: int) -> None:
            if handler.path != "/v1/chat/completions":
                send_json(handler, b"{}", status=404)
            elif n <= self.fail_first:
                send_json(handler, b'{"error": "busy"}', status=500 if n % 2 else 429,
                          headers={"Retry-After": "0"})
            else:
                send_json(handler, chat_answer(self.reply))

        super().__init__(answer)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


def test_payload_retries_and_key(server: FakeServer, tsv_factory, monkeypatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-test")
    path = tsv_factory(3)
    items = list(iter_items(path))
    model = OpenAIModel(server.url, "gpt-test", workers=2, retries=4, key_env="MY_KEY",
                        backoff=0.01)
    outs = model.predict(items, ["PROMPT-" + str(i.index) for i in items])
    assert [o.reply for o in outs] == ["The answer is (B)"] * 3
    assert len(server.requests) == 3 + 2  # two failures retried
    ok = [r for r in server.requests[2:]]
    content = ok[0]["messages"][0]["content"]
    assert content[0]["type"] == "image_url"
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert {c["text"] for r in ok for c in r["messages"][0]["content"] if c["type"] == "text"} \
        == {"PROMPT-0", "PROMPT-1", "PROMPT-2"}
    assert ok[0]["model"] == "gpt-test" and ok[0]["temperature"] == 0
    assert server.headers[-1]["Authorization"] == "Bearer sk-test"


def test_gives_up_and_records_error(tsv_factory) -> None:
    s = FakeServer(fail_first=100)
    try:
        model = OpenAIModel(s.url, "m", retries=2, backoff=0.001)
        item = next(iter_items(tsv_factory(1)))
        out = model.predict([item], ["p"])[0]
        assert out.reply is None and "gave up after 3 attempts" in out.error
        assert model.chat("x").startswith("Failed to obtain answer via API")
    finally:
        s.close()


def test_non_retryable_status_fails_fast(tsv_factory) -> None:
    s = FakeServer(fail_first=0)
    try:
        model = OpenAIModel(s.url.replace("/v1", "/wrong"), "m", retries=3, backoff=0.001)
        out = model.predict([next(iter_items(tsv_factory(1)))], ["p"])[0]
        assert "HTTP 404" in out.error and len(s.requests) == 1
    finally:
        s.close()


def test_cli_end_to_end_with_judge(server: FakeServer, tsv_factory, tmp_path: Path) -> None:
    judge = FakeServer(reply="A", fail_first=0)
    server.reply = "I think it is the organ on the left"  # rules fail -> judge decides
    try:
        data = tsv_factory(4)
        spec = f"openai:{server.url}#vlm?workers=3&batch=2&retries=3&backoff=0.01"
        assert main(["--data", str(data), "--model", spec, "--judge",
                     f"openai:{judge.url}#judge", "--out", str(tmp_path / "r")]) == 0
        lines = (tmp_path / "r/vlm/toy_VAL/predictions.jsonl").read_text().splitlines()
        recs = [json.loads(x) for x in lines]
        assert len(recs) == 4 and all(r["method"] == "judge" for r in recs)
        assert all(r["prediction"] == "A" for r in recs)
        # The judge verdict must be one of the item's own option letters.
        assert "Your output: " in judge.requests[0]["messages"][0]["content"][0]["text"]
    finally:
        judge.close()
