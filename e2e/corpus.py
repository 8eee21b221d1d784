"""The words the tiny model's tokenizer is trained on, and prompts built only from them.

The byte-level BPE tokenizer knows its training text well: words outside it fall back to bytes
and cost many tokens each (REAL-ENGINE.md), so the load client builds every prompt from these
sentences. This module has no dependencies: both the engine venv (make_model.py) and the
phaselens venv (loadgen.py) import it.
"""

from __future__ import annotations

import random

TRAINING_SENTENCES: tuple[str, ...] = (
    "the quick brown fox jumps over the lazy dog near the river bank",
    "a small model serves many requests while the scheduler keeps the cache warm",
    "prefill reads the whole prompt and decode writes one token at a time",
    "the cache holds blocks of keys and values for every running request",
    "when the pool is full the engine preempts a request and frees its blocks",
    "shared prefixes let the engine reuse blocks that an earlier request computed",
    "latency targets matter more than raw throughput for people waiting on answers",
    "the sidecar reads metrics from the engine and tells the operator what to change",
    "queues grow when requests arrive faster than the server can finish them",
    "transfer of cached blocks between machines takes time that adds to the first token",
    "green hills and blue lakes under a bright morning sky with white clouds",
    "engineers measure what the system does before they decide how to scale it",
)

WORDS: tuple[str, ...] = tuple(sorted({w for s in TRAINING_SENTENCES for w in s.split()}))

# One fixed preamble that every shared-prefix prompt starts with (about 200 words).
_PREFIX_RNG = random.Random(20240601)
SHARED_PREFIX: str = " ".join(_PREFIX_RNG.choice(TRAINING_SENTENCES) for _ in range(16))


def training_text(repeats: int = 50) -> list[str]:
    """Lines to train the tokenizer on."""
    return [s for _ in range(repeats) for s in TRAINING_SENTENCES]


def random_prompt(rng: random.Random, n_words: int, prefix: str = "") -> str:
    """A prompt of about `n_words` words, made of whole training sentences plus loose words."""
    if n_words < 0:
        raise ValueError(f"n_words must be >= 0, got {n_words}")
    words: list[str] = []
    while len(words) < n_words:
        words.extend(rng.choice(TRAINING_SENTENCES).split())
    body = " ".join(words[:n_words])
    return f"{prefix} {body}".strip() if prefix else body
