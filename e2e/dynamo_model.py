"""Writes a model folder for the Dynamo mocker: a byte-level BPE tokenizer padded to 2048 entries and
a tiny LlamaConfig (the mocker reads config.json only to size the KV cache; the frontend needs the
tokenizer). The vocabulary must reach 2048: the mocker emits token ids in [1000, 2000) and smaller
vocabularies detokenize them to nothing (recipes/REAL-DYNAMO.md). No torch needed.
Usage (in the Dynamo venv): python e2e/dynamo_model.py OUT_FOLDER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import training_text

VOCAB = 2048


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: dynamo_model.py OUT_FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[1])
    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        return 0
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.add_tokens([f" w{i}" for i in range(VOCAB - len(fast))])
    fast.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    fast.save_pretrained(str(folder))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
        "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 2, "vocab_size": len(fast), "max_position_embeddings": 8192,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    print(f"dynamo_model: vocab {len(fast)} -> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
