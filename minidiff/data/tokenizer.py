"""A word-level tokenizer for the captions (issue 13), from Hugging Face ``tokenizers``, trained
offline and saved as JSON beside the model that uses it.

A word-level model, so that a word the captions never used is a real [UNK] (a warning names it),
not a string of sub-word pieces; lowercase; split on whitespace and punctuation.  Special tokens
[PAD] = 0, [UNK] = 1, [BOS] = 2, [EOS] = 3.  ``encode`` gives int64 ids (N, L): [BOS] words
[EOS], then [PAD]; the padding mask is ``ids != PAD_ID``.  The empty prompt "" is [BOS] [EOS],
the null caption of classifier-free guidance.  ``tokenizers`` is imported only inside the
functions: the core of minidiff does not need it.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MAX_TOKENIZER_BYTES = 16 << 20


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise ImportError("the caption tokenizer needs Hugging Face tokenizers: `pip install 'tokenizers>=0.15'` "
                          "(or `pip install 'minidiff[torch]'`)") from e
    return tokenizers


def _empty_tokenizer(vocab: dict):
    """WordLevel over ``vocab`` with the lowercase normaliser and the whitespace + punctuation
    pre-tokeniser."""
    tk = _tokenizers()
    tok = tk.Tokenizer(tk.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = tk.normalizers.Lowercase()
    tok.pre_tokenizer = tk.pre_tokenizers.Sequence([tk.pre_tokenizers.WhitespaceSplit(),
                                                    tk.pre_tokenizers.Punctuation()])
    return tok


def train_tokenizer(corpus: list):
    """A WordLevel tokenizer over every word of ``corpus`` (a list of str): the special tokens
    first, then the words by decreasing count, ties by the word, so the same corpus gives the same
    JSON."""
    if isinstance(corpus, str) or not all(isinstance(t, str) for t in corpus):
        raise TypeError("corpus must be a list of str")
    probe = _empty_tokenizer({t: i for i, t in enumerate(SPECIAL_TOKENS)})
    counts = Counter()
    for text, n in Counter(corpus).items():      # pre-tokenise each distinct caption once
        for word, _ in probe.pre_tokenizer.pre_tokenize_str(probe.normalizer.normalize_str(text)):
            if word not in SPECIAL_TOKENS:
                counts[word] += n
    words = sorted(counts, key=lambda w: (-counts[w], w))
    tok = _empty_tokenizer({t: i for i, t in enumerate(SPECIAL_TOKENS + tuple(words))})
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def canonical_json(tok) -> str:
    """The tokenizer's JSON with sorted keys and no spaces: what its digest is taken of."""
    return json.dumps(json.loads(tok.to_str()), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def tokenizer_sha256(tok) -> str:
    """SHA-256 (hex) of the canonical JSON, for a checkpoint to record and check."""
    return hashlib.sha256(canonical_json(tok).encode()).hexdigest()


def save_tokenizer(tok, path) -> Path:
    """Write the tokenizer's JSON to ``path`` atomically (temp file, fsync, rename)."""
    from ..checkpoint import _atomic_write

    path = Path(path)
    text = tok.to_str(pretty=True).encode()
    _atomic_write(path, lambda f: f.write(text))
    return path


def load_tokenizer(path):
    """Read a tokenizer saved by ``save_tokenizer``.  A missing file is a FileNotFoundError; a
    file that is not tokenizer JSON, or whose special tokens are not [PAD] [UNK] [BOS] [EOS] at
    0..3, is a ValueError naming the path."""
    from ..checkpoint import regular_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer file {path} does not exist (save_tokenizer writes it beside the model)")
    regular_file(path, MAX_TOKENIZER_BYTES, "tokenizer")
    tk = _tokenizers()
    try:
        tok = tk.Tokenizer.from_str(path.read_text(encoding="utf-8"))
    except Exception as e:      # tokenizers raises a bare Exception on bad JSON
        raise ValueError(f"tokenizer file {path} is damaged or not a tokenizers JSON file ({e})") from None
    found = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if found != list(range(len(SPECIAL_TOKENS))):
        raise ValueError(f"tokenizer file {path}: special tokens {SPECIAL_TOKENS} must have ids 0..3, got {found}")
    return tok


def encode(tok, prompts, context_length: int) -> np.ndarray:
    """Token ids (N, L) int64 for ``prompts`` (a list of N str), L = ``context_length``:
    [BOS] words [EOS] then [PAD].  A prompt longer than L is cut, keeping [EOS] last, with a
    warning naming it; unknown words become [UNK], with a warning naming them."""
    from .._checks import int_at_least

    L = int_at_least("context_length", context_length, 2)
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of str (wrap one prompt in a list)")
    ids = np.full((len(prompts), L), PAD_ID, dtype=np.int64)      # (N, L)
    for i, enc in enumerate(tok.encode_batch(list(prompts), add_special_tokens=False)):
        unknown = [prompts[i][a:b] for t, (a, b) in zip(enc.ids, enc.offsets) if t == UNK_ID]
        if unknown:
            warnings.warn(f"prompt {prompts[i]!r}: unknown words {unknown} become [UNK]", stacklevel=2)
        row = [BOS_ID] + list(enc.ids) + [EOS_ID]
        if len(row) > L:
            warnings.warn(f"prompt {prompts[i]!r} has {len(row)} tokens with [BOS] and [EOS], more than "
                          f"context_length {L}: truncated", stacklevel=2)
            row = row[:L - 1] + [EOS_ID]
        ids[i, :len(row)] = row
    return ids


def decode(tok, ids):
    """The words of token ids (L,) -> str, or (N, L) -> list of str, special tokens left out
    (for display: words are joined by spaces, so "t-shirt" reads "t - shirt")."""
    a = np.asarray(ids)
    if a.ndim not in (1, 2) or a.dtype.kind not in "ui":
        raise ValueError(f"ids must be integer token ids of shape (L,) or (N, L), got {a.dtype} {a.shape}")
    if a.ndim == 1:
        return tok.decode([int(t) for t in a], skip_special_tokens=True)
    return tok.decode_batch([[int(t) for t in row] for row in a], skip_special_tokens=True)


def caption_tokenizer():
    """The caption tokenizer: every word of ``captions.vocabulary()`` (the templates', the class
    names' and the attribute words' and synonyms') and the comma, in alphabetical order after the
    special tokens.  Built from the vocabulary, not from a caption corpus, so it needs no data,
    takes milliseconds and is the same whatever subset a run trains on; a hand-written prompt
    from the captions' words has no unknown word."""
    from .captions import vocabulary

    return train_tokenizer([" ".join(vocabulary()) + " ,"])


def empty_caption_ids(context_length: int) -> np.ndarray:
    """The ids of the empty caption "" (L,): [BOS] [EOS] [PAD] ...: the null condition of
    classifier-free guidance for a text-conditioned model (= ``encode(tok, [""], L)[0]``)."""
    from .._checks import int_at_least

    L = int_at_least("context_length", context_length, 2)
    ids = np.full(L, PAD_ID, dtype=np.int64)
    ids[:2] = BOS_ID, EOS_ID
    return ids
