"""Makes the model folder a real Dynamo frontend + mocker needs: a tokenizer and a config.json.

The mocker reads `config.json` only to size its simulated KV cache; the frontend needs the
tokenizer (and the chat template). Same byte-level BPE as `make_model.py`, trained on
`corpus.py`, with one change the Dynamo recipe requires: the vocabulary has at least 2048
entries. The mocker emits random token ids in [1000, 2000); with a 512-token vocabulary they
detokenize to empty strings and the frontend streams no content, so no client could time a first
token. The vocabulary is padded with plain added tokens (" w1234") and `vocab_size` set to match.
Runs in Dynamo's venv (tokenizers + transformers, no torch needed).
Usage: python e2e/make_dynamo_model.py OUT_FOLDER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_model

MIN_VOCAB = 2048
PADDED_VOCAB = 2304  # a margin above the mocker's [1000, 2000) token range


def make_tokenizer(folder: Path) -> int:
    return make_model.make_tokenizer(folder, pad_to=PADDED_VOCAB)


def write_config(folder: Path, vocab_size: int) -> None:
    """A tiny Llama config (the mocker derives bytes per KV token from it); no weights."""
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "vocab_size": vocab_size,
        "max_position_embeddings": 4096,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}) + "\n")


def make(folder: Path) -> int:
    """Writes the folder unless it already holds a model; returns the vocabulary size."""
    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        return int(json.loads((folder / "config.json").read_text())["vocab_size"])
    folder.mkdir(parents=True, exist_ok=True)
    vocab = make_tokenizer(folder)
    if vocab < MIN_VOCAB:
        raise RuntimeError(f"tokenizer vocabulary {vocab} < {MIN_VOCAB}: the mocker's tokens would not decode")
    write_config(folder, vocab)
    return vocab


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: make_dynamo_model.py OUT_FOLDER", file=sys.stderr)
        return 2
    vocab = make(Path(argv[1]))
    print(f"make_dynamo_model: tokenizer (vocab {vocab}) and config in {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
