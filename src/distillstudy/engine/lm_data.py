"""Token datasets for language models, in one format: `synthetic_lm` (a random hidden Markov
language whose true next-token probabilities are known) and `text` (a UTF-8 corpus, or an npz
of token ids, with the built-in byte-level tokenizer or a local Hugging Face one).

    arrays = synthetic_lm({"vocab": 32, "states": 16, "length": 32,
                           "sequences": {"train": 4000, "val": 500, "test": 1000}}, seed=0)
    arrays = text({"name": "prose", "path": "data/raw/corpus.txt", "tokenizer": "bytes", "block": 64},
                  seed=0, val_fraction=0.1, test_fraction=0.1)
    artifacts.save_npz("data/prepared/prose.npz", arrays); print(describe(arrays))

The format (every array a numpy array; save_npz stores it as is):

- `tokens_train`, `tokens_val`, `tokens_test`: int64 (n, block + 1). Column 0 is the BOS id,
  columns 1..block the sequence; a model reads tokens[:, :-1] and predicts tokens[:, 1:], every
  position counted (text is cut into full blocks: no padding).
- `vocab_size`, `bos`: int64 scalars, 0 <= bos < vocab_size.
  synthetic_lm: tokens 0..vocab-1, vocab_size = vocab + 1, bos = vocab (a token the language
  never emits: its true probability is 0). bytes: ids = UTF-8 bytes 0..255, vocab_size 257,
  bos 256. A Hugging Face folder: vocab_size = len(tokenizer), bos = its bos (else eos) id
  (distillstudy.engine.hf.tokenizer_vocab / tokenizer_bos).
- synthetic_lm only: `hmm_initial` (S,), `hmm_transition` (S, S), `hmm_emission` (S, V), the truth
  (`truth(arrays)` rebuilds the HiddenMarkovModel).
- `record`: a JSON string: kind, the spec keys read, the seed, sizes; for text the corpus file's
  sha256, documents, tokens, blocks per split and the tail tokens dropped.

Text (prepare.datasets[<name>] keys `path`, `tokenizer`, `block`; prepare.val_fraction and
prepare.test_fraction): the file is decoded as strict UTF-8 (a leading byte-order mark dropped,
CRLF read as LF); a document is a maximal run of lines that are not blank (empty or whitespace
only), its lines joined by LF. Documents are tokenized (HF: `tok(doc, add_special_tokens=False)`)
and joined into one stream with the BOS id BETWEEN documents: the model then sees where one
document ends and an unrelated one starts (instead of learning to continue one text with another),
and the id keeps one meaning, "a document starts next", whether at column 0 or mid-row (GPT-2's
<|endoftext|> plays the same role). The stream is cut into n = floor(len / block) blocks (the
len mod block tail tokens dropped, counted in the record); row = [bos] + block tokens. Blocks go
to splits by a seeded permutation, with h(x) = floor(x + 1/2) (rounding, halves up):

    test = clip(h(test_fraction * n), 1, n - 2),   val = clip(h(val_fraction * (n - test)), 1, n - test - 1),
    train = n - test - val,

each split's rows kept in corpus order. An npz of token ids (a path ending `.npz`) holds `train`,
`val`, `test`, integer (n, block) arrays with ids in [0, 256) for bytes or [0, vocab_size) for a
Hugging Face tokenizer; its splits are kept as given, the BOS column prepended.

Seeds: each random draw has its own generator, seeded by seeds.derive_seed(seed, <label>):
"hmm" (the language), ("sequences", split) (each split's samples), ("blocks",) (text's split
permutation). Labels rather than SeedSequence.spawn's positions: adding sequences to train
changes neither the language nor the val and test samples.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from distillstudy.artifacts import file_sha256
from distillstudy.engine import hf, hmm as hmm_module
from distillstudy.engine.seeds import derive_seed
from distillstudy.engine.tables import user_npz
from distillstudy.errors import DataError, ParamsError
from distillstudy.grid import SPLITS

BYTE_VOCAB = 256  # ids of the byte-level tokenizer: one per byte value; its BOS is the next id
MIN_BLOCKS = len(SPLITS)  # one block per split at least
# Files of a Hugging Face tokenizer folder that define the ids (hashed into the record; weights are not).
TOKENIZER_FILE_PREFIXES = ("tokenizer", "vocab", "merges", "special_tokens", "added_tokens")


def _where(spec: dict, field: str) -> str:
    return f"prepare.datasets[{spec.get('name', '*')}].{field}"


def _count(spec: dict, field: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParamsError(f"{_where(spec, field)}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _format_arrays(rows: dict[str, np.ndarray], vocab_size: int, bos: int, record: dict) -> dict[str, np.ndarray]:
    """The stored arrays: each split's rows with the BOS column prepended, as int64."""
    arrays = {}
    for split in SPLITS:
        body = np.asarray(rows[split], dtype=np.int64)
        arrays[f"tokens_{split}"] = np.ascontiguousarray(
            np.concatenate([np.full((body.shape[0], 1), bos, dtype=np.int64), body], axis=1))
    arrays["vocab_size"] = np.array(vocab_size, dtype=np.int64)
    arrays["bos"] = np.array(bos, dtype=np.int64)
    arrays["record"] = np.array(json.dumps(record, sort_keys=True, allow_nan=False))
    return arrays


# --- synthetic_lm ---------------------------------------------------------------------------

def synthetic_lm(spec: dict, seed: int) -> dict[str, np.ndarray]:
    """A random hidden Markov language (hmm.random_hmm(vocab, states)) and independent samples of
    `length` tokens for each split (spec `sequences: {train, val, test}`), in the format above."""
    vocab = _count(spec, "vocab", spec.get("vocab"), minimum=2)
    states = _count(spec, "states", spec.get("states"))
    length = _count(spec, "length", spec.get("length"))
    sequences = spec.get("sequences")
    if not isinstance(sequences, dict) or set(sequences) != set(SPLITS):
        raise ParamsError(f"{_where(spec, 'sequences')}: must map exactly train, val and test to counts, "
                          f"got {sequences!r}")
    counts = {s: _count(spec, f"sequences.{s}", sequences[s]) for s in SPLITS}
    language = hmm_module.random_hmm(vocab, states, np.random.default_rng(derive_seed(seed, "hmm")))
    rows = {s: hmm_module.sample(language, counts[s], length, np.random.default_rng(derive_seed(seed, "sequences", s)))
            for s in SPLITS}
    record = {"kind": "synthetic_lm", "seed": int(seed),
              "spec": {"vocab": vocab, "states": states, "length": length, "sequences": counts},
              "sequences": counts, "block": length, "vocab_size": vocab + 1, "bos": vocab}
    arrays = _format_arrays(rows, vocab_size=vocab + 1, bos=vocab, record=record)
    arrays.update({f"hmm_{k}": v.copy() for k, v in language.arrays().items()})
    return arrays


def truth(arrays: dict) -> hmm_module.HiddenMarkovModel:
    """The hidden Markov language a synthetic_lm dataset was sampled from (its hmm_* arrays)."""
    missing = [f"hmm_{k}" for k in ("initial", "transition", "emission") if f"hmm_{k}" not in arrays]
    if missing:
        raise DataError(f"not a synthetic_lm dataset: no {', '.join(missing)} (only synthetic_lm stores its truth)")
    return hmm_module.HiddenMarkovModel(initial=arrays["hmm_initial"], transition=arrays["hmm_transition"],
                                        emission=arrays["hmm_emission"])


# --- tokenizers -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TextTokenizer:
    """What text() needs of a tokenizer. `id_limit`: ids an npz of token ids may hold are in
    [0, id_limit) (bytes: 256, the byte values; Hugging Face: vocab_size)."""

    label: str  # "bytes" or the folder, as params give it
    vocab_size: int
    bos: int
    id_limit: int
    encode: Callable[[list[str]], list[np.ndarray]]  # documents -> their ids
    about: dict


def _byte_ids(documents: list[str]) -> list[np.ndarray]:
    return [np.frombuffer(d.encode("utf-8"), dtype=np.uint8).astype(np.int64) for d in documents]


def _tokenizer_files_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.name.startswith(TOKENIZER_FILE_PREFIXES) or path.suffix == ".model"):
            digest.update(f"{path.name}|{file_sha256(path)}|".encode())
    return digest.hexdigest()


def _hf_tokenizer(folder: str) -> TextTokenizer:
    # engine/hf.py imports transformers on first use: byte-level and synthetic studies never do.
    tok = hf.load_tokenizer(folder)
    vocab_size, bos = int(hf.tokenizer_vocab(tok)), int(hf.tokenizer_bos(tok, folder))

    def encode(documents: list[str]) -> list[np.ndarray]:
        # verbose=False: long documents are split into blocks here, the model-length warning does not apply
        ids = tok(documents, add_special_tokens=False, verbose=False)["input_ids"]
        return [np.asarray(i, dtype=np.int64).reshape(-1) for i in ids]

    about = {"folder": folder, "vocab_size": vocab_size, "bos": bos,
             "files_sha256": _tokenizer_files_sha256(Path(folder))}
    return TextTokenizer(folder, vocab_size, bos, vocab_size, encode, about)


def tokenizer(spec: dict) -> TextTokenizer:
    """The tokenizer spec `tokenizer` names: "bytes", or a local Hugging Face tokenizer folder."""
    value = spec.get("tokenizer")
    if value == "bytes":
        return TextTokenizer("bytes", BYTE_VOCAB + 1, BYTE_VOCAB, BYTE_VOCAB, _byte_ids,
                             {"kind": "bytes", "vocab_size": BYTE_VOCAB + 1, "bos": BYTE_VOCAB})
    if not isinstance(value, str) or not Path(value).is_dir():
        raise ParamsError(f"{_where(spec, 'tokenizer')}: {value!r} is neither `bytes` (the built-in byte-level "
                          "tokenizer) nor an existing folder (a Hugging Face tokenizer saved with save_pretrained)")
    made = _hf_tokenizer(value)
    if not 0 <= made.bos < made.vocab_size:
        raise DataError(f"{value}: the tokenizer's BOS id {made.bos} is outside its vocabulary [0, {made.vocab_size})")
    return made


# --- text -----------------------------------------------------------------------------------

def _read_documents(path: Path) -> list[str]:
    """The corpus's documents (runs of non-blank lines), or a DataError naming the file."""
    data = path.read_bytes()
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, line_start = data.count(b"\n", 0, exc.start) + 1, data.rfind(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}: not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
                        f"(line {line}, byte {exc.start - line_start + 1} of that line): {exc.reason}") from None
    documents, current = [], []
    for line in content.removeprefix("\ufeff").replace("\r\n", "\n").split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            documents.append("\n".join(current))
            current = []
    if current:
        documents.append("\n".join(current))
    if not documents:
        raise DataError(f"{path}: empty corpus: no text other than whitespace ({len(data)} bytes)")
    return documents


def block_split_sizes(n_blocks: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Blocks per split (the formula in the module docstring); each >= 1, needs n_blocks >= 3."""
    def half_up(x):
        return int(np.floor(x + 0.5))

    test = min(max(1, half_up(test_fraction * n_blocks)), n_blocks - 2)
    val = min(max(1, half_up(val_fraction * (n_blocks - test))), n_blocks - test - 1)
    return {"train": n_blocks - test - val, "val": val, "test": test}


def _fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ParamsError(f"prepare.{name}: must be a number in (0, 1), got {value!r}")
    return float(value)


def _text_corpus(path: Path, spec: dict, tok: TextTokenizer, block: int, seed: int, val_fraction: float,
                 test_fraction: float) -> tuple[dict, dict]:
    documents = _read_documents(path)
    ids = tok.encode(documents)
    separator = np.array([tok.bos], dtype=np.int64)
    pieces = [piece for i, doc in enumerate(ids) for piece in ((separator, doc) if i else (doc,))]
    stream = np.concatenate(pieces)
    bad = np.flatnonzero((stream < 0) | (stream >= tok.vocab_size))
    if bad.size:
        raise DataError(f"{tok.label}: the tokenizer produced id {stream[bad[0]]} on {path}, outside its "
                        f"vocabulary [0, {tok.vocab_size})")
    n_blocks = len(stream) // block
    if n_blocks < MIN_BLOCKS:
        raise DataError(f"{path}: corpus too short: {len(stream)} tokens ({len(documents)} documents, "
                        f"{len(documents) - 1} separators, tokenizer {tok.label}); one block per split needs at "
                        f"least {MIN_BLOCKS} * block = {MIN_BLOCKS * block} tokens (add text or lower "
                        f"{_where(spec, 'block')})")
    blocks = stream[: n_blocks * block].reshape(n_blocks, block)
    sizes = block_split_sizes(n_blocks, val_fraction, test_fraction)
    order = np.random.default_rng(derive_seed(seed, "blocks")).permutation(n_blocks)
    ends = np.cumsum([sizes["test"], sizes["val"], sizes["train"]])
    chosen = dict(zip(("test", "val", "train"), np.split(order, ends[:-1])))
    rows = {s: blocks[np.sort(chosen[s])] for s in SPLITS}
    about = {"format": "text", "documents": len(documents), "tokens": int(len(stream) - (len(documents) - 1)),
             "separators": len(documents) - 1, "stream_tokens": int(len(stream)), "blocks_total": n_blocks,
             "dropped_tail_tokens": int(len(stream) - n_blocks * block),
             "val_fraction": val_fraction, "test_fraction": test_fraction}
    return rows, about


def _token_npz(path: Path, tok: TextTokenizer, block: int) -> tuple[dict, dict]:
    """The splits of an npz of token ids, checked (DataError naming file, array, row, column)."""
    raw = user_npz(path, "the npz of token ids")
    missing = [s for s in SPLITS if s not in raw]
    if missing:
        raise DataError(f"{path}: needs integer arrays train, val and test (n, block); missing {', '.join(missing)} "
                        f"(found {sorted(raw)})")
    rows = {}
    for split in SPLITS:
        a = raw[split]
        if not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"{path}: array `{split}` must hold integer token ids, got dtype {a.dtype}")
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != block:
            raise DataError(f"{path}: array `{split}` must be shaped (n >= 1, block = {block}), got {a.shape}")
        bad = np.argwhere((a < 0) | (a >= tok.id_limit))
        if bad.size:
            r, c = bad[0]
            raise DataError(f"{path}: array `{split}` row {r}, column {c} (0-based): token id {a[r, c]} is outside "
                            f"[0, {tok.id_limit}), the ids of tokenizer {tok.label}")
        rows[split] = a.astype(np.int64)
    about = {"format": "npz", "tokens": int(sum(r.size for r in rows.values())), "splits": "as given in the file"}
    return rows, about


def text(spec: dict, seed: int, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """A text dataset (spec `path`, `tokenizer`, `block`) in the format above: a UTF-8 corpus
    tokenized, joined, cut into blocks and split; or an npz of token ids (path ending .npz)."""
    block = _count(spec, "block", spec.get("block"))
    if not isinstance(spec.get("path"), str) or not spec["path"]:
        raise ParamsError(f"{_where(spec, 'path')}: the corpus file is required, got {spec.get('path')!r}")
    path = Path(spec["path"])
    is_npz = path.suffix.lower() == ".npz"
    if not path.is_file():  # before loading a tokenizer: the cheaper, likelier mistake first
        raise DataError(f"{path}: the {'npz of token ids' if is_npz else 'corpus file'} does not exist"
                        + (" (it is a folder)" if path.is_dir() else ""))
    tok = tokenizer(spec)
    if is_npz:
        rows, about = _token_npz(path, tok, block)
    else:
        rows, about = _text_corpus(path, spec, tok, block, seed, _fraction("val_fraction", val_fraction),
                                   _fraction("test_fraction", test_fraction))
    record = {"kind": "text", "seed": int(seed),
              "spec": {"path": spec["path"], "tokenizer": spec["tokenizer"], "block": block},
              "source": {"path": spec["path"], "sha256": file_sha256(path)}, "tokenizer": tok.about,
              "block": block, "blocks": {s: int(len(rows[s])) for s in SPLITS},
              "vocab_size": tok.vocab_size, "bos": tok.bos, **about}
    return _format_arrays(rows, vocab_size=tok.vocab_size, bos=tok.bos, record=record)


# --- checks and summary ---------------------------------------------------------------------

def check(arrays: dict, where: str) -> None:
    """Refuse (DataError naming `where`) arrays that break the format: int64 token arrays of
    one width with the BOS column, ids in [0, vocab_size), finite truth arrays."""
    missing = [k for k in (*(f"tokens_{s}" for s in SPLITS), "vocab_size", "bos", "record") if k not in arrays]
    if missing:
        raise DataError(f"{where}: not a prepared token dataset: missing {', '.join(missing)}")
    vocab_size, bos = int(arrays["vocab_size"]), int(arrays["bos"])
    if not 0 <= bos < vocab_size:
        raise DataError(f"{where}: bos {bos} is outside [0, vocab_size = {vocab_size})")
    widths = set()
    for split in SPLITS:
        t = arrays[f"tokens_{split}"]
        if t.dtype != np.int64 or t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 2:
            raise DataError(f"{where}: tokens_{split} must be int64 (n >= 1, block + 1 >= 2), got {t.dtype} {t.shape}")
        widths.add(t.shape[1])
        if np.any(t[:, 0] != bos):
            raise DataError(f"{where}: tokens_{split} row {np.flatnonzero(t[:, 0] != bos)[0]} does not start with bos")
        bad = np.argwhere((t < 0) | (t >= vocab_size))
        if bad.size:
            raise DataError(f"{where}: tokens_{split} row {bad[0][0]}, column {bad[0][1]}: id {t[tuple(bad[0])]} "
                            f"outside [0, {vocab_size})")
    if len(widths) != 1:
        raise DataError(f"{where}: the splits' token arrays differ in width ({sorted(widths)})")
    for key in ("hmm_initial", "hmm_transition", "hmm_emission"):
        if key in arrays and not np.all(np.isfinite(arrays[key])):
            raise DataError(f"{where}: {key} holds non-finite values")


def describe(arrays: dict) -> str:
    """One line for the prepare log: what the dataset is and its sizes."""
    record = json.loads(str(arrays["record"]))
    counts = " / ".join(f"{s} {arrays[f'tokens_{s}'].shape[0]}" for s in SPLITS)
    width = arrays["tokens_train"].shape[1] - 1
    ids = f"vocab_size {int(arrays['vocab_size'])}, bos {int(arrays['bos'])}"
    if record["kind"] == "synthetic_lm":
        spec = record["spec"]
        return (f"synthetic_lm: hidden Markov language, {spec['states']} states, {spec['vocab']} tokens ({ids}); "
                f"sequences of {width}: {counts}")
    source = f"text {record['source']['path']} (tokenizer {record['spec']['tokenizer']}, {ids})"
    if record.get("format") == "npz":
        return f"{source}: token ids, {record['tokens']} tokens in blocks of {width}: {counts} (splits as given)"
    return (f"{source}: {record['documents']} documents, {record['tokens']} tokens -> blocks of {width}: {counts}; "
            f"{record['dropped_tail_tokens']} tail tokens dropped")
