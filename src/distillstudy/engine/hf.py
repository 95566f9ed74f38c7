"""Local Hugging Face tokenizers and causal language models (teachers), never downloaded.

A dataset may name a tokenizer folder (`tokenizer: models/my-tok`) and a teacher folder
(`teacher: {hf: models/my-teacher}`): each is what `save_pretrained` wrote. This module loads
them with `transformers` (`AutoTokenizer`, `AutoConfig`, `AutoModelForCausalLM`), always with
`local_files_only=True`, so nothing is fetched from the Hub: a folder that is not on disk is
refused as such, rather than looked up online.

    tok = load_tokenizer("models/my-tok")
    vocab, bos = tokenizer_vocab(tok), tokenizer_bos(tok, "models/my-tok")
    teacher = load_causal_lm("models/my-teacher", vocab_size=vocab, block=64)
    logits = teacher(ids)                        # (batch, length) int64 -> (batch, length, vocab)
    logits, cache = teacher.step(ids[:, :1], None)   # incremental decoding with the KV cache

The teacher is a frozen float32 module in eval mode (its parameters do not require grad): it
is scored, never trained here. Every problem a user can cause (a missing folder, files that do
not parse, a model that is not a causal LM, a vocabulary that differs from the tokenizer's,
a context shorter than the block) is a one-line `DataError` naming the folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import importlib


def _transformers():
    """transformers, imported on first use: its import costs ~2 s (its Auto* classes ~3 s more),
    which only studies with a Hugging Face tokenizer or teacher should pay; this module is
    imported by every language-model stage."""
    return importlib.import_module("transformers")
from torch import Tensor, nn

from distillstudy.errors import DataError

# The files one of which a tokenizer folder holds (fast tokenizers write tokenizer.json; slow
# ones a vocabulary file). Without any of them AutoTokenizer may build a near-empty tokenizer
# from config.json alone (transformers 5: a GPT-2 model folder gives one of 1 token), which
# would tokenize everything into unknowns instead of failing.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "merges.txt",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
MAX_REASON_CHARS = 200  # transformers' messages can list every known model class: keep the first line


def _reason(exc: BaseException) -> str:
    """`exc` as one short line: its class and the first line of its message."""
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if len(first) > MAX_REASON_CHARS:
        first = first[:MAX_REASON_CHARS] + "..."
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__


def _existing_folder(folder: str, what: str) -> Path:
    """`folder` as a Path, refused unless it is a directory (never a Hub repository id)."""
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"{what} folder {folder}: no such directory (a local save_pretrained folder is "
                        f"needed: nothing is downloaded)")
    return path


def load_tokenizer(folder: str):
    """The tokenizer saved in `folder` (`AutoTokenizer.from_pretrained(folder, local_files_only=True)`)."""
    path = _existing_folder(folder, "tokenizer")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise DataError(f"tokenizer folder {folder}: holds no tokenizer files (expected one of "
                        f"{', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = _transformers().AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # OSError, ValueError, JSONDecodeError, the tokenizers library's Exception...
        raise DataError(f"tokenizer folder {folder}: does not load ({_reason(exc)})") from None
    if len(tokenizer) < 2:
        raise DataError(f"tokenizer folder {folder}: loads a vocabulary of {len(tokenizer)} token(s); "
                        f"its tokenizer files are incomplete")
    return tokenizer


def tokenizer_vocab(tokenizer) -> int:
    """The number of ids the tokenizer can produce (added special tokens included): the models' output size."""
    return len(tokenizer)


def tokenizer_bos(tokenizer, folder: str) -> int:
    """The id that starts every sequence: the tokenizer's BOS, else its EOS (GPT-2 has only
    `<|endoftext|>`, which it uses for both); a tokenizer with neither is refused."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise DataError(f"tokenizer folder {folder}: has neither a bos_token nor an eos_token to start "
                    f"sequences with; add one (bos_token=...) and save_pretrained it again")


class HFCausalLM(nn.Module):
    """A transformers causal LM as this project's LM interface: token ids (batch, length) int64
    -> logits (batch, length, vocab_size). No attention mask: the data are full blocks."""

    def __init__(self, model: nn.Module, folder: str):
        super().__init__()
        self.model = model
        self.folder = str(folder)
        text_config = model.config.get_text_config()
        self.vocab_size = int(text_config.vocab_size)
        self.context = _context_length(text_config)

    def forward(self, ids: Tensor) -> Tensor:
        return self.model(input_ids=ids, use_cache=False).logits

    def step(self, ids: Tensor, cache):
        """ids (batch, k) new tokens after those already in `cache` (None at the start) ->
        (logits (batch, k, vocab_size) of those positions, the extended cache).

        The cache is the model's `past_key_values` (a transformers `DynamicCache`), extended
        in place: after a step, use only the cache it returns."""
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        return out.logits, out.past_key_values


def _context_length(config) -> int | None:
    """The longest sequence the model's positions cover, or None where its config gives no limit."""
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def load_causal_lm(folder: str, *, vocab_size: int | None = None, block: int | None = None) -> HFCausalLM:
    """The causal LM saved in `folder`, as a frozen float32 `HFCausalLM` in eval mode.

    `vocab_size` (the tokenizer's, when given) must equal the model's: its logits then index
    the same tokens. `block` (the sequences' length, when given) must fit its positions. Both
    are checked on the config, before the weights are read. Weights that do not cover the
    model (missing tensors, which transformers would initialise at random) are refused too."""
    path = _existing_folder(folder, "causal LM")
    if not (path / "config.json").is_file():
        raise DataError(f"causal LM folder {folder}: has no config.json (save the model with save_pretrained)")
    try:
        config = _transformers().AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise DataError(f"causal LM folder {folder}: config.json does not load ({_reason(exc)})") from None
    if type(config) not in _transformers().MODEL_FOR_CAUSAL_LM_MAPPING:
        raise DataError(f"causal LM folder {folder}: model_type {config.model_type!r} is not a causal "
                        f"language model (AutoModelForCausalLM cannot load it)")
    text_config = config.get_text_config()
    model_vocab = int(text_config.vocab_size)
    if vocab_size is not None and model_vocab != int(vocab_size):
        raise DataError(f"causal LM folder {folder}: its vocabulary has {model_vocab} tokens but the "
                        f"tokenizer's has {int(vocab_size)}; they must be the same tokens")
    context = _context_length(text_config)
    if block is not None and context is not None and context < int(block):
        raise DataError(f"causal LM folder {folder}: its context holds {context} positions, shorter than "
                        f"the block of {int(block)} tokens")
    progress_bars = _transformers().utils.logging.is_progress_bar_enabled()
    _transformers().utils.logging.disable_progress_bar()  # a bar per load would fill the job logs
    try:
        model, info = _transformers().AutoModelForCausalLM.from_pretrained(
            str(path), config=config, local_files_only=True, dtype=torch.float32, output_loading_info=True)
    except Exception as exc:
        raise DataError(f"causal LM folder {folder}: does not load ({_reason(exc)})") from None
    finally:
        if progress_bars:
            _transformers().utils.logging.enable_progress_bar()
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise DataError(f"causal LM folder {folder}: its weights lack {len(missing)} tensor(s) of the model "
                        f"(first: {missing[0]}); transformers would initialise them at random")
    wrapped = HFCausalLM(model, str(folder))
    wrapped.eval()  # the wrapper's own flag too: gpt.sample restores the mode it found
    wrapped.requires_grad_(False)
    return wrapped


def describe(model: HFCausalLM) -> dict:
    """Provenance of a loaded causal LM: its folder, model_type, parameter count, vocabulary,
    context and the sha256 of the folder's config.json."""
    config_bytes = (Path(model.folder) / "config.json").read_bytes()
    return {
        "folder": model.folder,
        "model_type": model.model.config.model_type,
        "n_params": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.vocab_size,
        "context": model.context,
        "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
    }
