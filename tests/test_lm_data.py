"""distillstudy.engine.lm_data: the token format of synthetic_lm and text datasets, determinism,
the truth's round trip, a multi-document UTF-8 corpus rebuilt from its blocks, the split sizes,
npz of token ids, a local Hugging Face tokenizer built here (nothing downloaded) and every bad
input refused with the file (and position) named."""

import json
import subprocess
import sys

import numpy as np
import pytest
from distillstudy.artifacts import load_npz, save_npz
from distillstudy.engine import hmm as H
from distillstudy.engine import lm_data as L
from distillstudy.errors import DataError, ParamsError

SPLITS = ("train", "val", "test")
HMM_SPEC = {"name": "hmm", "vocab": 5, "states": 3, "length": 7, "sequences": {"train": 20, "val": 5, "test": 6}}
# Documents with non-ASCII UTF-8 (2-, 3- and 4-byte characters), an indented line and trailing spaces.
DOCUMENTS = ["Première ligne, café.\nDeuxième ligne: naïve façade.",
             "日本語のテキスト、そして emoji 🙂🙃 here.",
             "  indented first line\nsecond line with trailing spaces   \nthird — with a dash.",
             "Short one.",
             "Ελληνικά κείμενα και русский текст, mixed in one document."]
# Blank-line separators of every kind: empty, whitespace only, several, CRLF.
SEPARATORS = ["\n\n", "\n   \n\t\n", "\r\n\r\n", "\n\n\n\n"]


def corpus_text() -> str:
    body = DOCUMENTS[0]
    for sep, doc in zip(SEPARATORS, DOCUMENTS[1:]):
        body += sep + doc
    return "\n \n" + body + "\n\n"  # leading and trailing blank lines are no documents


def byte_stream(documents) -> list[int]:
    """The stream the format promises, written out independently: bytes, 256 between documents."""
    stream = []
    for i, doc in enumerate(documents):
        stream += ([256] if i else []) + list(doc.replace("\r\n", "\n").encode("utf-8"))
    return stream


def text_spec(path, block=8, tokenizer="bytes"):
    return {"name": "prose", "path": str(path), "tokenizer": tokenizer, "block": block}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(corpus_text().encode("utf-8"))
    return path


def assert_format(arrays, vocab_size, bos, width):
    assert int(arrays["vocab_size"]) == vocab_size and int(arrays["bos"]) == bos
    for s in SPLITS:
        t = arrays[f"tokens_{s}"]
        assert t.dtype == np.int64 and t.ndim == 2 and t.shape[1] == width + 1 and t.shape[0] >= 1
        assert np.all(t[:, 0] == bos)
        assert t[:, 1:].min() >= 0 and t[:, 1:].max() < vocab_size
    L.check(arrays, "test arrays")
    json.loads(str(arrays["record"]))
    assert "\n" not in L.describe(arrays)


# --- synthetic_lm ---------------------------------------------------------------------------

def test_synthetic_lm_format_and_record():
    arrays = L.synthetic_lm(HMM_SPEC, seed=3)
    assert_format(arrays, vocab_size=6, bos=5, width=7)
    for s, n in HMM_SPEC["sequences"].items():
        assert arrays[f"tokens_{s}"].shape == (n, 8)
        assert np.all(arrays[f"tokens_{s}"][:, 1:] < 5)  # the language never emits its bos
    record = json.loads(str(arrays["record"]))
    assert record["kind"] == "synthetic_lm" and record["sequences"] == HMM_SPEC["sequences"]
    assert arrays["hmm_initial"].shape == (3,) and arrays["hmm_transition"].shape == (3, 3)
    assert arrays["hmm_emission"].shape == (3, 5)
    assert "3 states" in L.describe(arrays) and "train 20 / val 5 / test 6" in L.describe(arrays)


def test_synthetic_lm_is_deterministic_and_seeded():
    a, b, c = L.synthetic_lm(HMM_SPEC, 3), L.synthetic_lm(HMM_SPEC, 3), L.synthetic_lm(HMM_SPEC, 4)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["hmm_emission"], c["hmm_emission"])
    assert not np.array_equal(a["tokens_train"], c["tokens_train"])
    # Each split has its own generator: more train sequences change neither the language nor val/test.
    more = L.synthetic_lm({**HMM_SPEC, "sequences": {**HMM_SPEC["sequences"], "train": 40}}, 3)
    for k in ("tokens_val", "tokens_test", "hmm_initial", "hmm_transition", "hmm_emission"):
        np.testing.assert_array_equal(a[k], more[k])
    same_sizes = L.synthetic_lm({**HMM_SPEC, "sequences": {"train": 5, "val": 5, "test": 5}}, 3)
    assert not np.array_equal(same_sizes["tokens_val"], same_sizes["tokens_test"])  # independent draws


def test_truth_round_trips_and_generated_the_samples(tmp_path):
    spec = {"name": "hmm", "vocab": 4, "states": 2, "length": 3, "sequences": {"train": 6000, "val": 2, "test": 2}}
    arrays = L.synthetic_lm(spec, seed=11)
    save_npz(tmp_path / "hmm.npz", arrays)
    loaded = load_npz(tmp_path / "hmm.npz")
    model = L.truth(loaded)
    for key, value in model.arrays().items():
        np.testing.assert_array_equal(value, arrays[f"hmm_{key}"])
    # The samples come from that language: first-token frequencies match p(x_0) (6000 draws: se < 0.007).
    first = np.bincount(loaded["tokens_train"][:, 1], minlength=4) / 6000
    np.testing.assert_allclose(first, model.initial @ model.emission, atol=0.03)
    assert np.all(np.isfinite(H.token_log_probs(model, loaded["tokens_train"][:, 1:])))
    with pytest.raises(DataError, match="not a synthetic_lm"):
        L.truth({"tokens_train": loaded["tokens_train"]})


def test_synthetic_lm_bad_spec_names_the_key():
    with pytest.raises(ParamsError, match=r"prepare\.datasets\[hmm\]\.vocab"):
        L.synthetic_lm({**HMM_SPEC, "vocab": 1}, 0)
    with pytest.raises(ParamsError, match=r"prepare\.datasets\[hmm\]\.sequences"):
        L.synthetic_lm({**HMM_SPEC, "sequences": {"train": 5, "val": 5}}, 0)


# --- text, bytes ----------------------------------------------------------------------------

def test_bytes_corpus_round_trips_through_disjoint_complete_splits(corpus):
    block = 8
    arrays = L.text(text_spec(corpus, block), seed=0, val_fraction=0.2, test_fraction=0.2)
    assert_format(arrays, vocab_size=257, bos=256, width=block)
    stream = byte_stream(DOCUMENTS)
    n_blocks = len(stream) // block
    expected_blocks = [tuple(stream[i * block:(i + 1) * block]) for i in range(n_blocks)]
    assert len(set(expected_blocks)) == n_blocks  # so that each row identifies its block
    position = {b: i for i, b in enumerate(expected_blocks)}
    where = {s: [position[tuple(row)] for row in arrays[f"tokens_{s}"][:, 1:].tolist()] for s in SPLITS}
    every = sorted(i for s in SPLITS for i in where[s])
    assert every == list(range(n_blocks))  # complete and disjoint
    assert all(where[s] == sorted(where[s]) for s in SPLITS)  # corpus order within a split
    rows = {i: row for s in SPLITS for i, row in zip(where[s], arrays[f"tokens_{s}"][:, 1:].tolist())}
    rebuilt = [t for i in range(n_blocks) for t in rows[i]] + stream[n_blocks * block:]
    documents, current = [], []
    for t in rebuilt + [256]:
        if t == 256:
            documents.append(bytes(current).decode("utf-8"))
            current = []
        else:
            current.append(t)
    assert documents == [d.replace("\r\n", "\n") for d in DOCUMENTS]
    record = json.loads(str(arrays["record"]))
    assert record["documents"] == len(DOCUMENTS) and record["separators"] == len(DOCUMENTS) - 1
    assert record["stream_tokens"] == len(stream) and record["dropped_tail_tokens"] == len(stream) % block
    assert record["blocks"] == {s: len(where[s]) for s in SPLITS}
    assert record["source"]["sha256"] == __import__("hashlib").sha256(corpus.read_bytes()).hexdigest()
    assert f"{len(DOCUMENTS)} documents" in L.describe(arrays)


def test_text_split_sizes_and_determinism(corpus):
    one = L.text(text_spec(corpus, 4), seed=5, val_fraction=0.25, test_fraction=0.2)
    again = L.text(text_spec(corpus, 4), seed=5, val_fraction=0.25, test_fraction=0.2)
    other = L.text(text_spec(corpus, 4), seed=6, val_fraction=0.25, test_fraction=0.2)
    for k in one:
        np.testing.assert_array_equal(one[k], again[k])
    assert not np.array_equal(one["tokens_test"], other["tokens_test"])
    n = len(byte_stream(DOCUMENTS)) // 4
    test = int(np.floor(0.2 * n + 0.5))
    val = int(np.floor(0.25 * (n - test) + 0.5))
    assert [len(one[f"tokens_{s}"]) for s in SPLITS] == [n - test - val, val, test]


def test_block_split_sizes_keep_one_block_per_split():
    assert L.block_split_sizes(3, 0.01, 0.01) == {"train": 1, "val": 1, "test": 1}
    assert L.block_split_sizes(3, 0.9, 0.9) == {"train": 1, "val": 1, "test": 1}
    assert L.block_split_sizes(100, 0.1, 0.2) == {"train": 72, "val": 8, "test": 20}
    assert L.block_split_sizes(10, 0.25, 0.25) == {"train": 5, "val": 2, "test": 3}  # 2.5 rounds up


def test_corpus_of_exactly_three_blocks(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("abcdefghi")
    arrays = L.text(text_spec(path, 3), seed=0, val_fraction=0.1, test_fraction=0.1)
    rows = sorted(bytes(arrays[f"tokens_{s}"][0, 1:].tolist()) for s in SPLITS)
    assert rows == [b"abc", b"def", b"ghi"]


# --- bad input ------------------------------------------------------------------------------

def test_bad_utf8_names_file_offset_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("first line\nsecond é line\nthird ".encode("utf-8") + b"\xff tail\n")
    offset = len("first line\nsecond é line\nthird ".encode("utf-8"))
    with pytest.raises(DataError) as err:
        L.text(text_spec(path), 0, 0.1, 0.1)
    message = str(err.value)
    assert str(path) in message and f"byte offset {offset}" in message and "line 3" in message
    assert "0xff" in message and "byte 7 of that line" in message


@pytest.mark.parametrize("content", ["", "  \n\n\t\n \r\n"])
def test_empty_corpus(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(DataError, match="empty corpus") as err:
        L.text(text_spec(path), 0, 0.1, 0.1)
    assert str(path) in str(err.value)


def test_short_corpus_says_how_many_tokens_it_has_and_needs(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcd\n\nefgh")  # 4 + 1 separator + 4 = 9 tokens
    with pytest.raises(DataError) as err:
        L.text(text_spec(path, 4), 0, 0.1, 0.1)
    message = str(err.value)
    assert str(path) in message and "9 tokens" in message and "12 tokens" in message


def test_missing_file_bad_block_and_unknown_tokenizer(tmp_path, corpus):
    with pytest.raises(DataError, match="does not exist") as err:
        L.text(text_spec(tmp_path / "nope.txt"), 0, 0.1, 0.1)
    assert "nope.txt" in str(err.value)
    with pytest.raises(DataError, match="does not exist") as err:
        L.text(text_spec(tmp_path / "nope.npz"), 0, 0.1, 0.1)
    for block in (0, -3, 2.5, True):
        with pytest.raises(ParamsError, match=r"prepare\.datasets\[prose\]\.block"):
            L.text(text_spec(corpus, block), 0, 0.1, 0.1)
    for value in ("byte", str(corpus), None):
        with pytest.raises(ParamsError, match=r"prepare\.datasets\[prose\]\.tokenizer"):
            L.text(text_spec(corpus, 4, tokenizer=value), 0, 0.1, 0.1)
    with pytest.raises(ParamsError, match=r"prepare\.val_fraction"):
        L.text(text_spec(corpus, 4), 0, 0.0, 0.1)


# --- npz of token ids -----------------------------------------------------------------------

def token_npz(tmp_path, **arrays):
    path = tmp_path / "ids.npz"
    np.savez(path, **arrays)
    return path


def test_token_npz_kept_as_given_with_bos_column(tmp_path):
    rng = np.random.default_rng(0)
    given = {"train": rng.integers(0, 256, (7, 5)).astype(np.uint8), "val": rng.integers(0, 256, (2, 5)),
             "test": rng.integers(0, 256, (3, 5)).astype(np.int32)}
    arrays = L.text(text_spec(token_npz(tmp_path, **given), 5), 0, 0.1, 0.1)
    assert_format(arrays, vocab_size=257, bos=256, width=5)
    for s in SPLITS:
        np.testing.assert_array_equal(arrays[f"tokens_{s}"][:, 1:], given[s])
    assert "splits as given" in L.describe(arrays)


def test_token_npz_out_of_range_names_array_row_column_and_range(tmp_path):
    train = np.zeros((4, 3), dtype=np.int64)
    train[2, 1] = 256  # the byte-level bos is no byte
    path = token_npz(tmp_path, train=train, val=np.ones((1, 3), int), test=np.ones((1, 3), int))
    with pytest.raises(DataError) as err:
        L.text(text_spec(path, 3), 0, 0.1, 0.1)
    message = str(err.value)
    assert str(path) in message and "`train` row 2, column 1" in message and "[0, 256)" in message
    negative = np.ones((2, 3), dtype=np.int16)
    negative[1, 2] = -1
    path = token_npz(tmp_path, train=train * 0, val=np.ones((1, 3), int), test=negative)
    with pytest.raises(DataError, match=r"`test` row 1, column 2"):
        L.text(text_spec(path, 3), 0, 0.1, 0.1)


@pytest.mark.parametrize("bad, match", [
    ({"val": np.ones((1, 3), np.float32)}, "`val` must hold integer"),
    ({"val": np.ones(3, int)}, r"`val` must be shaped"),
    ({"val": np.ones((1, 4), int)}, r"`val` must be shaped \(n >= 1, block = 3\)"),
    ({"val": np.ones((0, 3), int)}, r"`val` must be shaped"),
])
def test_token_npz_bad_arrays(tmp_path, bad, match):
    arrays = {"train": np.ones((2, 3), int), "val": np.ones((1, 3), int), "test": np.ones((1, 3), int), **bad}
    path = token_npz(tmp_path, **arrays)
    with pytest.raises(DataError, match=match) as err:
        L.text(text_spec(path, 3), 0, 0.1, 0.1)
    assert str(path) in str(err.value)


def test_token_npz_missing_split(tmp_path):
    path = token_npz(tmp_path, train=np.ones((2, 3), int), val=np.ones((1, 3), int))
    with pytest.raises(DataError, match="missing test") as err:
        L.text(text_spec(path, 3), 0, 0.1, 0.1)
    assert str(path) in str(err.value)


def test_check_refuses_a_broken_format():
    arrays = L.synthetic_lm(HMM_SPEC, 0)
    broken = {**arrays, "tokens_val": arrays["tokens_val"].copy()}
    broken["tokens_val"][1, 0] = 0
    with pytest.raises(DataError, match="where.npz: tokens_val row 1 does not start with bos"):
        L.check(broken, "where.npz")
    with pytest.raises(DataError, match="int64"):
        L.check({**arrays, "tokens_test": arrays["tokens_test"].astype(np.int32)}, "where.npz")


# --- a local Hugging Face tokenizer ---------------------------------------------------------

def save_tiny_tokenizer(folder, lines):
    """A byte-level BPE trained here on `lines`, saved with save_pretrained: nothing downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    tok.save_pretrained(str(folder))
    return tok


def test_hf_tokenizer_folder(tmp_path, corpus):
    folder = tmp_path / "tok"
    tok = save_tiny_tokenizer(folder, DOCUMENTS)
    arrays = L.text(text_spec(corpus, 6, tokenizer=str(folder)), seed=1, val_fraction=0.2, test_fraction=0.2)
    bos = tok.bos_token_id
    assert_format(arrays, vocab_size=len(tok), bos=bos, width=6)
    stream = []
    for i, doc in enumerate(DOCUMENTS):
        stream += ([bos] if i else []) + tok(doc.replace("\r\n", "\n"), add_special_tokens=False)["input_ids"]
    n_blocks = len(stream) // 6
    blocks = sorted(tuple(stream[i * 6:(i + 1) * 6]) for i in range(n_blocks))
    assert sorted(tuple(r) for s in SPLITS for r in arrays[f"tokens_{s}"][:, 1:].tolist()) == blocks
    record = json.loads(str(arrays["record"]))
    assert record["tokenizer"]["folder"] == str(folder) and record["stream_tokens"] == len(stream)
    # An npz of token ids checked against this tokenizer's vocabulary, not the bytes'.
    ids = np.full((2, 6), len(tok) - 1)
    path = token_npz(tmp_path, train=ids, val=ids, test=np.full((1, 6), len(tok)))
    with pytest.raises(DataError, match=rf"`test` row 0, column 0 .*\[0, {len(tok)}\)"):
        L.text(text_spec(path, 6, tokenizer=str(folder)), 0, 0.1, 0.1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="broken"):
        L.text(text_spec(corpus, 6, tokenizer=str(broken)), 0, 0.1, 0.1)


def test_byte_level_studies_never_import_transformers(corpus):
    code = ("import sys; from distillstudy.engine import lm_data as L; "
            f"L.text({{'path': {str(corpus)!r}, 'tokenizer': 'bytes', 'block': 8}}, 0, 0.2, 0.2); "
            "L.synthetic_lm({'vocab': 3, 'states': 2, 'length': 4, "
            "'sequences': {'train': 2, 'val': 1, 'test': 1}}, 0); "
            "assert 'transformers' not in sys.modules and 'tokenizers' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
