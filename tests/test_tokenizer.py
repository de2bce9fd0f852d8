"""The caption tokenizer (issue 13): a word-level Hugging Face tokenizer with [PAD] [UNK] [BOS]
[EOS] = 0..3, NumPy ids with padding, truncation and unknown-word warnings, a deterministic JSON
and its digest, save / load and a damaged file."""
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from minidiff.data import captions as C  # noqa: E402
from minidiff.data import tokenizer as T  # noqa: E402

CORPUS = ["a dark ankle boot facing left", "a photo of a small light sneaker pointing right",
          "light, patterned pullover", "a t-shirt", "a dark coat"]


@pytest.fixture(scope="module")
def tok():
    return T.caption_tokenizer()


def test_special_tokens_come_first_then_words_by_count():
    t = T.train_tokenizer(CORPUS)
    assert [t.token_to_id(s) for s in T.SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert t.token_to_id("a") == 4                       # the most frequent word
    assert t.token_to_id(",") is not None and t.token_to_id("t") is not None   # punctuation splits


def test_round_trip_of_every_caption_word(tok):
    words = C.vocabulary()
    prompts = ["a dark ankle boot facing left", " ".join(words)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # no unknown word, no truncation
        ids = T.encode(tok, prompts, context_length=len(words) + 8)
    assert ids.dtype == np.int64 and ids.shape == (2, len(words) + 8)
    assert T.decode(tok, ids[0]) == prompts[0]
    assert T.decode(tok, ids)[1] == " ".join(w.replace("-", " - ") for w in words)
    for row, prompt in zip(ids, prompts):
        n = len(tok.encode(prompt, add_special_tokens=False).ids)
        assert row[0] == T.BOS_ID and row[n + 1] == T.EOS_ID
        assert np.all(row[n + 2:] == T.PAD_ID) and np.all(row[:n + 2] != T.PAD_ID)


def test_the_empty_prompt_is_bos_eos(tok):
    ids = T.encode(tok, ["", "a coat"], 6)
    np.testing.assert_array_equal(ids[0], [T.BOS_ID, T.EOS_ID, 0, 0, 0, 0])
    np.testing.assert_array_equal(ids != T.PAD_ID, [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]])


def test_a_long_prompt_is_truncated_keeping_eos_with_a_warning(tok):
    prompt = "a photo of a small dark patterned ankle boot facing left"
    with pytest.warns(UserWarning, match="'a photo of a small dark patterned ankle boot facing left'.*truncated"):
        ids = T.encode(tok, [prompt], 5)
    full = T.encode(tok, [prompt], 16)
    np.testing.assert_array_equal(ids[0], list(full[0, :4]) + [T.EOS_ID])


def test_unknown_words_become_unk_with_a_warning_naming_them(tok):
    with pytest.warns(UserWarning, match=r"unknown words \['zebra', 'Striped'\]"):
        ids = T.encode(tok, ["a zebra Striped coat"], 8)
    assert list(ids[0, :6]) == [T.BOS_ID, tok.token_to_id("a"), T.UNK_ID, T.UNK_ID, tok.token_to_id("coat"), T.EOS_ID]


def test_the_json_and_its_digest_are_deterministic():
    a, b = T.train_tokenizer(CORPUS), T.train_tokenizer(list(reversed(CORPUS)))
    assert a.to_str() == b.to_str()
    assert T.tokenizer_sha256(a) == T.tokenizer_sha256(b)
    assert T.tokenizer_sha256(a) != T.tokenizer_sha256(T.train_tokenizer(CORPUS + ["a bag"]))


def test_save_and_load(tok, tmp_path):
    path = T.save_tokenizer(tok, tmp_path / "sub" / "tokenizer.json")
    back = T.load_tokenizer(path)
    assert T.tokenizer_sha256(back) == T.tokenizer_sha256(tok)
    prompts = ["a dark ankle boot facing left", ""]
    np.testing.assert_array_equal(T.encode(back, prompts, 12), T.encode(tok, prompts, 12))
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]     # no temp file left


def test_a_missing_or_damaged_file_is_a_clear_error(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        T.load_tokenizer(tmp_path / "nope.json")
    path = T.save_tokenizer(tok, tmp_path / "tokenizer.json")
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="tokenizer.json is damaged"):
        T.load_tokenizer(path)
    d = json.loads(text)
    d["added_tokens"][0]["content"] = "<pad>"
    d["model"]["vocab"] = {("<pad>" if k == "[PAD]" else k): v for k, v in d["model"]["vocab"].items()}
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="special tokens"):
        T.load_tokenizer(path)


def test_bad_arguments_name_them(tok):
    with pytest.raises(ValueError, match="context_length"):
        T.encode(tok, ["a coat"], 1)
    with pytest.raises(TypeError, match="prompts must be a list of str"):
        T.encode(tok, "a coat", 8)
    with pytest.raises(ValueError, match="ids must be"):
        T.decode(tok, np.zeros((1, 2, 3), np.int64))


def test_the_caption_tokenizer_knows_every_training_caption_and_the_empty_caption_is_the_null(tok):
    from minidiff.data.captions import caption_dataset

    _, _, text = caption_dataset("train", limit=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no unknown word, no truncation at L = 24
        ids = T.encode(tok, text, 24)
    assert (ids == T.UNK_ID).sum() == 0
    assert T.caption_tokenizer().to_str() == tok.to_str()   # data-free: the same every time
    np.testing.assert_array_equal(T.encode(tok, [""], 7)[0], T.empty_caption_ids(7))
    np.testing.assert_array_equal(T.empty_caption_ids(4), [T.BOS_ID, T.EOS_ID, T.PAD_ID, T.PAD_ID])
