"""Tiny local Hugging Face folders for the language-model tests: a tokenizer trained here on
the test's own texts and a randomly initialised GPT-2, each written with `save_pretrained`.
Nothing is downloaded; each takes well under a second.

    tok = write_tiny_tokenizer(tmp_path / "tok", ["the cat sat.", "a dog ran."])
    write_tiny_gpt2(tmp_path / "gpt2", vocab_size=len(tok), n_positions=64)
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

BOS, EOS, UNK = "<bos>", "<eos>", "<unk>"  # ids 0, 1, 2 (the trainer puts special tokens first)


def write_tiny_tokenizer(folder, texts: list[str], vocab_size: int = 80):
    """A byte-level BPE tokenizer trained on `texts` (at most `vocab_size` tokens: the three
    special ones, the characters seen, then merges), saved to `folder` and returned.

    Encoding adds no special tokens, and decoding restores any text made of the characters
    seen in training; other characters become `<unk>`."""
    model = Tokenizer(models.BPE(unk_token=UNK))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, UNK], show_progress=False)
    model.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, bos_token=BOS, eos_token=EOS, unk_token=UNK)
    Path(folder).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def write_tiny_gpt2(folder, vocab_size: int, n_positions: int = 64, seed: int = 0) -> None:
    """A randomly initialised one-layer GPT-2 (2 heads, width 16; seeded) saved to `folder`."""
    config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_layer=1, n_head=2, n_embd=16,
                        bos_token_id=0, eos_token_id=min(1, vocab_size - 1))
    with torch.random.fork_rng(devices=[]):  # seeded, without moving the caller's generator
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(str(folder))
