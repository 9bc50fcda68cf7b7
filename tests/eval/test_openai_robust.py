"""The openai adapter against a misbehaving loopback server, and its loglik mode."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from conftest import LoopbackServer, chat_answer, make_rows, send_json, write_tsv
from gmai_eval.cli import main
from gmai_eval.data import iter_items
from gmai_eval.openai_adapter import LogprobsUnsupported, OpenAIModel

Behaviour = Callable[[BaseHTTPRequestHandler, dict[str, Any]], None]
send, chat = send_json, chat_answer


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], LoopbackServer]]:
    servers: list[LoopbackServer] = []

    def start(behaviour: Behaviour) -> LoopbackServer:
        servers.append(LoopbackServer(lambda h, body, n: behaviour(h, body)))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


MALFORMED: dict[str, Behaviour] = {
    "message is a string": lambda h, b: send(h, json.dumps(
        {"choices": [{"message": "The answer is B"}]}).encode()),
    "non-UTF-8 body": lambda h, b: send(h, b'{"choices": [{"message": {"content": "\xff\xfe"}}]}'),
    "short body": lambda h, b: send(h, chat("B")[:20], length=400),
    "not JSON": lambda h, b: send(h, b"<html>gateway</html>"),
    "no choices": lambda h, b: send(h, b'{"choices": []}'),
    "content is a number": lambda h, b: send(h, chat(3)),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_200_is_a_failure_of_that_item(kind: str, serve, tsv_factory) -> None:
    server = serve(MALFORMED[kind])
    items = list(iter_items(tsv_factory(2)))
    model = OpenAIModel(server.url, "m", retries=1, backoff=0, timeout=5)
    outs = model.predict(items, ["p", "p"])
    assert all(o.reply is None and "malformed response" in o.error for o in outs), outs
    assert len(server.requests) == 4  # each item tried twice, nothing crashed


def test_timeout_bounds_the_whole_request(serve, tsv_factory) -> None:
    """A server trickling one byte every 0.2 s never trips a per-read timeout of 1 s."""

    def trickle(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        data = chat("B")
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        for byte in data:
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.2)

    server = serve(trickle)
    item = next(iter_items(tsv_factory(1)))
    model = OpenAIModel(server.url, "m", retries=0, timeout=1.0)
    t0 = time.monotonic()
    out = model.predict([item], ["p"])[0]
    took = time.monotonic() - t0
    assert out.error is not None and "longer than timeout=1s" in out.error
    assert took < 2.0  # the full answer would take ~12 s


def test_api_failures_reported_apart(serve, tsv_factory, tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        calls["n"] += 1
        if "image 1?" in json.dumps(body):
            send(h, b"\xff\xfe\x00")
        else:
            send(h, chat("I cannot tell"))

    server = serve(flaky)
    data = tsv_factory(4)
    spec = f"openai:{server.url}#m?retries=0&backoff=0"
    assert main(["--data", str(data), "--model", spec, "--out", str(tmp_path / "r")]) == 0
    res = json.loads((tmp_path / "r/m/toy_VAL/scores.json").read_text())
    assert res["api_failed"] == 1 and res["n"] == 4 and res["correct"] == 0
    assert res["methods"] == {"failed": 3, "error": 1}


def logprobs_answer(top: dict[str, float]) -> bytes:
    tokens = [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in top.items()]
    first = max(tokens, key=lambda e: e["logprob"])
    return json.dumps({"choices": [{"index": 0, "finish_reason": "length",
                                    "message": {"role": "assistant", "content": first["token"]},
                                    "logprobs": {"content": [dict(first, top_logprobs=tokens)]}}]
                       }).encode()


def test_loglik_picks_the_best_option_letter(serve, tsv_factory, tmp_path: Path) -> None:
    # "Z" and " The" rank above every option letter; " C" beats "C"; E is not an option.
    top = {"Z": -0.1, " The": -0.5, "A": -3.0, " C": -1.2, "C": -2.0, "E": -0.3, "B": -4.0}
    server = serve(lambda h, b: send(h, logprobs_answer(top)))
    rows = make_rows(3)
    for r in rows:
        r.update(A="liver", B="kidney", C="spleen", D="pancreas", E=None, answer="C")
    data = write_tsv(tmp_path / "toy_VAL.tsv", rows)
    spec = f"openai:{server.url}#m?mode=loglik&workers=2"
    assert main(["--data", str(data), "--model", spec, "--out", str(tmp_path / "r")]) == 0
    req = server.requests[0]
    assert (req["max_tokens"], req["logprobs"], req["top_logprobs"]) == (1, True, 20)
    recs = [json.loads(x) for x in
            (tmp_path / "r/m-loglik/toy_VAL/predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in recs] == ["C", "C", "C"]
    assert recs[0]["scores"] == {"A": -3.0, "B": -4.0, "C": -1.2}
    assert json.loads((tmp_path / "r/m-loglik/toy_VAL/scores.json").read_text())["correct"] == 3


def test_loglik_without_logprobs_is_a_clear_error(serve, tsv_factory, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    server = serve(lambda h, b: send(h, chat("B")))
    items = list(iter_items(tsv_factory(1)))
    with pytest.raises(LogprobsUnsupported):
        OpenAIModel(server.url, "m", mode="loglik").predict(items, ["p"])
    spec = f"openai:{server.url}#m?mode=loglik"
    assert main(["--data", str(tsv_factory(2)), "--model", spec, "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "returned no logprobs" in err and "mode=generate" in err and "Traceback" not in err
