"""Model specs, the adapter interface, and the baseline models.

A spec names a model on the command line:
- ``hf:PATH[?mode=generate|loglik&batch=8&max_new_tokens=64&dtype=bf16&name=NAME]``
- ``openai:URL#MODEL[?mode=generate|loglik&workers=8&timeout=120&retries=5&backoff=1&
  key_env=OPENAI_API_KEY&max_tokens=256&batch=32&name=NAME]``
- ``random[?seed=0]``, ``first``, ``most-frequent-letter``
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from .data import Item


@dataclass
class Output:
    """What a model returns for one item: free text to extract from, or a letter directly."""

    reply: str | None = None
    letter: str | None = None
    method: str | None = None  # set when ``letter`` is given: "loglik", "baseline"
    scores: dict[str, float] | None = None  # per-letter log-probabilities (loglik)
    error: str | None = None  # set when the call failed; such items are retried on resume
    invalid: str | None = None  # set by the runner for a row that cannot be asked (the reason)


class Model(Protocol):
    """The interface every adapter implements."""

    name: str
    batch_size: int

    def predict(self, items: list[Item], prompts: list[str]) -> list[Output]:
        """One output per item, in order."""
        ...


@dataclass
class Spec:
    """A parsed model spec: ``kind``, ``target`` (path/URL), ``model`` (openai) and options."""

    kind: str
    target: str = ""
    model: str = ""
    options: dict[str, str] = field(default_factory=dict)


def parse_spec(spec: str) -> Spec:
    """Split ``kind:target#model?opts`` into its parts (options are URL query syntax)."""
    body, _, query = spec.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    kind, sep, target = body.partition(":")
    if not sep:
        return Spec(kind=body, options=options)
    model = ""
    if kind == "openai":
        target, _, model = target.partition("#")
        if not model:
            raise ValueError(f"openai spec needs '#MODEL': {spec}")
    return Spec(kind=kind, target=target, model=model, options=options)


# Spec options that change how fast predictions come, not what they are: a resumed run may
# change them (batch sizes give the same letters; see the batch-invariance tests).
NEUTRAL_OPTIONS = frozenset({"batch", "workers", "timeout", "retries", "backoff", "key_env"})


def prediction_spec(spec: str) -> str:
    """``spec`` without its throughput-only options, options sorted: what run.json records."""
    parsed = parse_spec(spec)
    target = parsed.target + (f"#{parsed.model}" if parsed.model else "")
    head = f"{parsed.kind}:{target}" if target else parsed.kind
    kept = sorted((k, v) for k, v in parsed.options.items() if k not in NEUTRAL_OPTIONS)
    return head + ("?" + "&".join(f"{k}={v}" for k, v in kept) if kept else "")


def safe_name(text: str) -> str:
    """A file-system-safe model name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "model"


class RandomBaseline:
    """Uniform random letter among the item's options, seeded per item for reproducibility."""

    batch_size = 256

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.name = "random" if seed == 0 else f"random-seed{seed}"

    def predict(self, items: list[Item], prompts: list[str]) -> list[Output]:
        outs = []
        for item in items:
            rng = random.Random(f"{self.seed}:{item.index}")
            letters = sorted(item.options) or ["A"]
            outs.append(Output(letter=rng.choice(letters), method="baseline"))
        return outs


class FirstBaseline:
    """Always the first option."""

    name = "first"
    batch_size = 256

    def predict(self, items: list[Item], prompts: list[str]) -> list[Output]:
        return [Output(letter=(min(i.options) if i.options else "A"), method="baseline")
                for i in items]


class MostFrequentBaseline:
    """Always the letter most frequent among the answers (data or key), else ``A``."""

    name = "most-frequent-letter"
    batch_size = 256

    def __init__(self, counts: dict[str, int] | None = None) -> None:
        counts = counts or {}
        # Ties broken alphabetically so the choice is deterministic.
        self.letter = min(counts, key=lambda k: (-counts[k], k)) if counts else "A"

    def predict(self, items: list[Item], prompts: list[str]) -> list[Output]:
        return [Output(letter=self.letter, method="baseline") for _ in items]


def require_eval_extra(spec: str) -> None:
    """``hf:`` models need PyTorch and transformers (the ``eval`` extra); say so in one line."""
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"gmai-eval: error: --model {spec} needs {' and '.join(missing)}, which "
                         "the 'eval' extra installs: pip install 'gmai-build[eval]' (baselines "
                         "and openai: models work without it)")


def load_model(spec: str, mode: str | None = None, batch: int | None = None,
               answer_counts: dict[str, int] | None = None, **kwargs: Any) -> Model:
    """Build the adapter named by ``spec``; ``mode``/``batch`` are CLI-level defaults."""
    parsed = parse_spec(spec)
    opts = parsed.options
    if parsed.kind == "random":
        model: Model = RandomBaseline(int(opts.get("seed", 0)))
    elif parsed.kind == "first":
        model = FirstBaseline()
    elif parsed.kind in ("most-frequent-letter", "most-frequent"):
        model = MostFrequentBaseline(answer_counts)
    elif parsed.kind == "hf":
        require_eval_extra(spec)
        from .hf_adapter import HFModel

        model = HFModel(
            parsed.target,
            mode=opts.get("mode", mode or "generate"),
            batch_size=int(opts.get("batch", batch or 8)),
            max_new_tokens=int(opts.get("max_new_tokens", 64)),
            dtype=opts.get("dtype"),
            **kwargs,
        )
    elif parsed.kind == "openai":
        from .openai_adapter import OpenAIModel

        model = OpenAIModel(
            parsed.target,
            parsed.model,
            workers=int(opts.get("workers", 8)),
            timeout=float(opts.get("timeout", 120)),
            retries=int(opts.get("retries", 5)),
            key_env=opts.get("key_env", "OPENAI_API_KEY"),
            max_tokens=int(opts.get("max_tokens", 256)),
            batch_size=int(opts.get("batch", batch or 32)),
            backoff=float(opts.get("backoff", 1.0)),
            mode=opts.get("mode", mode or "generate"),
        )
    else:
        raise ValueError(f"unknown model spec {spec!r} (hf:, openai:, random, first, "
                         "most-frequent-letter)")
    if "name" in opts:
        model.name = safe_name(opts["name"])
    return model
