"""engine/hf.py: local Hugging Face tokenizers and causal LMs, on tiny folders written here
(tests/lm_fixtures.py), with the network shut: every socket connection fails."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

from distillstudy.engine import hf
from distillstudy.engine.gpt import sample
from distillstudy.errors import DataError
from lm_fixtures import write_tiny_gpt2, write_tiny_tokenizer

TEXTS = ["the cat sat on the mat.", "a dog ran far away; the end!", "the cat and the dog sat."]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network: the Hub's offline switch on, and any connection attempt an error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One tokenizer folder and one GPT-2 folder of the tokenizer's vocabulary (16 positions)."""
    root = tmp_path_factory.mktemp("hf")
    tokenizer = write_tiny_tokenizer(root / "tok", TEXTS)
    write_tiny_gpt2(root / "gpt2", vocab_size=len(tokenizer), n_positions=16, seed=1)
    return root, len(tokenizer)


def test_tokenizer_round_trip_from_its_folder(folders):
    root, vocab = folders
    tok = hf.load_tokenizer(str(root / "tok"))
    assert hf.tokenizer_vocab(tok) == vocab
    assert hf.tokenizer_bos(tok, str(root / "tok")) == tok.convert_tokens_to_ids("<bos>")
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        assert ids and all(0 <= i < vocab for i in ids)
        assert tok.bos_token_id not in ids  # encoding adds no special tokens: the data add BOS themselves
        assert tok.decode(ids) == text


def test_tokenizer_bos_falls_back_to_eos_then_refuses(folders):
    root, _ = folders
    tok = hf.load_tokenizer(str(root / "tok"))
    eos = tok.eos_token_id
    tok.bos_token = None
    assert hf.tokenizer_bos(tok, "my-tok") == eos
    tok.eos_token = None
    with pytest.raises(DataError, match="my-tok.*neither a bos_token nor an eos_token"):
        hf.tokenizer_bos(tok, "my-tok")


def test_tokenizer_folders_that_do_not_load(folders, tmp_path):
    root, _ = folders
    with pytest.raises(DataError, match=f"{tmp_path / 'absent'}: no such directory"):
        hf.load_tokenizer(str(tmp_path / "absent"))
    # A model folder has a config.json but no tokenizer: transformers would build a 1-token one.
    with pytest.raises(DataError, match="gpt2: holds no tokenizer files"):
        hf.load_tokenizer(str(root / "gpt2"))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "tokenizer_config.json").write_text((root / "tok" / "tokenizer_config.json").read_text())
    (corrupt / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt: does not load") as err:
        hf.load_tokenizer(str(corrupt))
    assert "\n" not in str(err.value)


def test_load_causal_lm_equals_the_transformers_model(folders):
    root, vocab = folders
    model = hf.load_causal_lm(str(root / "gpt2"), vocab_size=vocab, block=16)
    assert model.vocab_size == vocab and model.context == 16
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    reference = GPT2LMHeadModel.from_pretrained(str(root / "gpt2"), local_files_only=True).eval()
    ids = torch.randint(0, vocab, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids)
        expected = reference(input_ids=ids).logits
    assert logits.shape == (3, 16, vocab) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    about = hf.describe(model)
    assert about["model_type"] == "gpt2" and about["vocab_size"] == vocab and about["context"] == 16
    assert about["n_params"] == sum(p.numel() for p in reference.parameters())
    assert len(about["config_sha256"]) == 64


def test_step_with_the_cache_gives_the_full_forward_logits(folders):
    root, vocab = folders
    model = hf.load_causal_lm(str(root / "gpt2"))
    ids = torch.randint(0, vocab, (4, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = model(ids)
        logits, cache = model.step(ids[:, :3], None)  # a prefix first, then one token at a time
        pieces = [logits]
        for i in range(3, ids.shape[1]):
            logits, cache = model.step(ids[:, i:i + 1], cache)
            assert logits.shape == (4, 1, vocab)
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)


def test_causal_lm_folders_that_are_refused(folders, tmp_path):
    root, vocab = folders
    with pytest.raises(DataError, match=f"{tmp_path / 'absent'}: no such directory"):
        hf.load_causal_lm(str(tmp_path / "absent"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2", ')
    with pytest.raises(DataError, match="broken: config.json does not load") as err:
        hf.load_causal_lm(str(broken))
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=rf"gpt2: its vocabulary has {vocab} tokens but the tokenizer's has {vocab + 7}"):
        hf.load_causal_lm(str(root / "gpt2"), vocab_size=vocab + 7)
    with pytest.raises(DataError, match="gpt2: its context holds 16 positions, shorter than the block of 17"):
        hf.load_causal_lm(str(root / "gpt2"), block=17)


def test_folders_that_are_not_a_whole_causal_lm(folders, tmp_path):
    root, _ = folders
    vision = tmp_path / "vision"
    vision.mkdir()
    (vision / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(DataError, match="vision: model_type 'vit' is not a causal language model"):
        hf.load_causal_lm(str(vision))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((root / "gpt2" / "config.json").read_text())
    with pytest.raises(DataError, match="no_weights: does not load"):
        hf.load_causal_lm(str(no_weights))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((root / "gpt2" / "config.json").read_text())
    tensors = load_file(str(root / "gpt2" / "model.safetensors"))
    dropped = next(name for name in tensors if name.endswith("ln_f.weight"))
    save_file({k: v for k, v in tensors.items() if k != dropped}, str(partial / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(DataError, match="partial: its weights lack 1 tensor"):
        hf.load_causal_lm(str(partial))


def test_gpt_sample_draws_the_same_tokens_with_the_hf_cache(folders):
    """engine.gpt.sample uses HFCausalLM.step (the KV cache): the same draws as recomputing
    the prefix each step (float64, so that no rounding can flip a draw)."""
    root, vocab = folders
    model = hf.load_causal_lm(str(root / "gpt2")).double()
    draws = [sample(model, 5, 12, bos=0, generator=torch.Generator().manual_seed(3), cache=cache)
             for cache in (True, False)]
    assert draws[0].shape == (5, 13) and bool((draws[0][:, 0] == 0).all())
    assert bool((draws[0][:, 1:] != 0).all())  # the BOS is banned
    assert torch.equal(draws[0], draws[1])
    assert not model.training
