"""WordPiece tokenizer trained on our own behaviour texts, and tokenisation in Spark.

The tokenizer (``tokenizers`` library) is:

- normaliser: NFKC + lower-case;
- pre-tokeniser: split on whitespace **only**, so the words of ``behavior_text``
  (``[shop]``, ``electronics.smartphone``, ``+2h``, ``p3``, ``<target:app>``) reach the
  WordPiece model whole; frequent ones become single tokens, rare ones (numeric category
  ids, unseen brands, title words) are split into ``##`` pieces (lower-case letters, digits
  and the punctuation of the format are always in the vocabulary);
- model: WordPiece with ``[UNK]``; special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]``
  (ids 0..4); post-processor ``[CLS] text [SEP]``;
- truncation on the **left**: ``behavior_text`` runs oldest to newest and ends with the
  recency gap and ``<target:...>``, so a too-long text loses its oldest events, never
  the newest ones or the target.

:func:`train_tokenizer` writes a folder that :func:`load_tokenizer` and
``transformers.AutoTokenizer.from_pretrained`` both load (``tokenizer.json`` and
``tokenizer_config.json``); log that folder as an MLflow artifact.
:func:`tokenize_column` adds fixed-length ``input_ids`` / ``attention_mask`` arrays in
Spark with an iterator pandas UDF that loads the tokenizer once per Python worker;
:class:`TailEncoder` encodes exactly like :func:`encode`, several times faster (scoring).
"""

from __future__ import annotations

import functools
import itertools
import json
import string
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import PreTrainedTokenizerFast

from propensity.core.schema import TEXT_COLUMN

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
TOKENIZER_FILE = "tokenizer.json"
#: Characters always in the vocabulary, so unseen words split into pieces instead of becoming ``[UNK]``.
INITIAL_ALPHABET = string.ascii_lowercase + string.digits + "[]<>:+._-#/&'"
_TOKENS_TYPE = "struct<input_ids: array<int>, attention_mask: array<int>>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path) -> Path:
    """Train a WordPiece tokenizer on ``texts`` and save it to ``out_dir``.

    :param texts: training texts: behaviour texts, optionally item titles (streamed, not kept in memory).
    :param vocab_size: largest vocabulary, special tokens included.
    :param out_dir: folder to write (created if missing; files in it are replaced).
    :returns: ``out_dir``, loadable with :func:`load_tokenizer`.
    :raises ValueError: ``vocab_size`` is too small for the special tokens.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} must be larger than the {len(SPECIAL_TOKENS)} special tokens")
    tok = Tokenizer(WordPiece(unk_token=UNK, continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=list(SPECIAL_TOKENS),
                               continuing_subword_prefix="##", show_progress=False)
    # One extra line of doubled characters puts every character in both word-initial and ``##`` form.
    alphabet_line = " ".join(c + c for c in INITIAL_ALPHABET)
    tok.train_from_iterator(itertools.chain((t for t in texts if t), [alphabet_line]), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, tok.token_to_id(CLS)), (SEP, tok.token_to_id(SEP))],
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, cls_token=CLS, sep_token=SEP, mask_token=MASK,
        truncation_side="left", padding_side="right", clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(str(out_dir))
    return out_dir


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by :func:`train_tokenizer` (its folder or its ``tokenizer.json``).

    :raises FileNotFoundError: no ``tokenizer.json`` there.
    """
    path = Path(path)
    folder = path.parent if path.name == TOKENIZER_FILE else path
    if not (folder / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(f"no {TOKENIZER_FILE} in {str(folder)!r}; train one with train_tokenizer")
    tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    tok.truncation_side = "left"
    tok.padding_side = "right"
    return tok


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(path: str) -> PreTrainedTokenizerFast:
    """One tokenizer per path per Python process (Spark reuses its Python workers)."""
    return load_tokenizer(path)


def encode(tokenizer: PreTrainedTokenizerFast, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-length ``input_ids`` and ``attention_mask`` (int32, shape ``(len(texts), max_length)``).

    Texts longer than ``max_length`` tokens (with ``[CLS]`` and ``[SEP]``) lose their oldest
    (leftmost) tokens; shorter ones are padded with ``[PAD]`` on the right.
    """
    if max_length < 3:
        raise ValueError(f"max_length={max_length} must be at least 3 ([CLS], one token, [SEP])")
    enc = tokenizer(texts, max_length=max_length, truncation=True, padding="max_length",
                    return_attention_mask=True, return_token_type_ids=False, return_tensors="np")
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def tokenize_column(df: DataFrame, tokenizer_path: str, max_length: int, text_col: str = TEXT_COLUMN) -> DataFrame:
    """``df`` with ``input_ids`` and ``attention_mask`` ARRAY<INT> columns of length ``max_length``.

    Runs as an iterator pandas UDF: the tokenizer is loaded once per Python worker (cached
    by path) and encodes whole Arrow batches. A NULL text is encoded as the empty text.

    :param df: any DataFrame with a string column ``text_col``.
    :param tokenizer_path: folder (or ``tokenizer.json``) readable by the executors.
    :param max_length: sequence length, ``[CLS]`` and ``[SEP]`` included.
    :param text_col: the column to tokenise.
    """
    if max_length < 3:
        raise ValueError(f"max_length={max_length} must be at least 3 ([CLS], one token, [SEP])")
    if text_col not in df.columns:
        raise ValueError(f"text_col={text_col!r} is not a column of the DataFrame; columns: {', '.join(df.columns)}")
    path = str(tokenizer_path)
    load_tokenizer(path)  # fail early, on the driver, with a clear message

    @pandas_udf(_TOKENS_TYPE)  # type: ignore[call-overload]
    def _tokenize(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        tokenizer = _cached_tokenizer(path)
        for texts in batches:
            ids, mask = encode(tokenizer, [t if isinstance(t, str) else "" for t in texts.tolist()], max_length)
            yield pd.DataFrame({"input_ids": list(ids), "attention_mask": list(mask)})

    tokens = "_tokens"
    return (df.withColumn(tokens, _tokenize(F.col(text_col)))
            .withColumn("input_ids", F.col(f"{tokens}.input_ids"))
            .withColumn("attention_mask", F.col(f"{tokens}.attention_mask")).drop(tokens))


#: Pre-tokenizers that split words at every space, so cutting a text at a space cuts its tokens there too.
_SPACE_SPLITTING = ("WhitespaceSplit", "Whitespace", "BertPreTokenizer")
#: Normalizers that map characters one by one (nothing is merged across a space).
_PER_CHARACTER = ("NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "BertNormalizer")
#: Our tokenizer's normaliser (see :func:`train_tokenizer`): on ASCII text, ``str.lower``.
_NFKC_LOWERCASE = {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}


def _per_character(normalizer: dict[str, Any] | None) -> bool:
    if normalizer is None:
        return True
    if normalizer.get("type") == "Sequence":
        return all(_per_character(n) for n in normalizer.get("normalizers", []))
    return normalizer.get("type") in _PER_CHARACTER


class TailEncoder:
    """:func:`encode` for one ``max_length``: the same ids and mask, several times faster.

    * Truncation keeps the newest (rightmost) tokens and every space-separated word of a text
      yields at least one token, so only a text's last ``max_length - 2`` words can reach the
      model; a ``behavior_text`` of 64 events has about 380 words, the models keep 48 or 96
      tokens. Only those last words are tokenised: a cut at a space cuts the tokens there too
      (the pre-tokenizer splits at spaces and the normaliser works character by character;
      other tokenizers are not cut). A cut text that yields fewer tokens than fit (possible
      only with empty or whitespace-only words) is encoded again whole.
    * Our normaliser, NFKC then lower-case, is ``str.lower`` on ASCII text: ASCII texts are
      lower-cased in Python and tokenised without the (slow) Rust normaliser.
    * The Rust tokenizer is called directly (``encode_batch_fast``: no offsets, no Python dicts).

    The ids and mask always equal ``encode``'s (``tests/test_scoring.py`` checks it).
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        """:param tokenizer: a tokenizer from :func:`load_tokenizer`."""
        if max_length < 3:
            raise ValueError(f"max_length={max_length} must be at least 3 ([CLS], one token, [SEP])")
        self.max_length = max_length
        self.keep_words = max_length - 2  # room left by [CLS] and [SEP]
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.enable_truncation(max_length, direction="left")
        backend.enable_padding(direction="right", length=max_length, pad_id=int(tokenizer.pad_token_id),
                               pad_token=str(tokenizer.pad_token))
        self.backend = backend
        spec = json.loads(backend.to_str())
        self.cut = (spec.get("pre_tokenizer") or {}).get("type") in _SPACE_SPLITTING and _per_character(
            spec.get("normalizer"))
        self.ascii_backend: Any = None
        if spec.get("normalizer") == _NFKC_LOWERCASE:
            self.ascii_backend = Tokenizer.from_str(backend.to_str())
            self.ascii_backend.normalizer = None

    def _arrays(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids and mask of ``texts``, the ASCII ones through the normaliser-free tokenizer."""
        n, length = len(texts), self.max_length
        encodings: list[Any]
        if self.ascii_backend is None:
            encodings = self.backend.encode_batch_fast(texts)
        else:
            ascii_rows = [i for i, t in enumerate(texts) if t.isascii()]
            other_rows = [i for i, t in enumerate(texts) if not t.isascii()]
            encodings = [None] * n
            done = self.ascii_backend.encode_batch_fast([texts[i].lower() for i in ascii_rows])
            if other_rows:
                done += self.backend.encode_batch_fast([texts[i] for i in other_rows])
            for i, encoding in zip(ascii_rows + other_rows, done, strict=True):
                encodings[i] = encoding
        ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(n, length)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int32).reshape(n, length)
        return ids, mask

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``input_ids`` and ``attention_mask`` (int32, ``(len(texts), max_length)``) of ``texts``."""
        if not self.cut:
            return self._arrays(texts)
        keep = self.keep_words
        heads = [parts[0] if len(parts) > keep else None for parts in (t.rsplit(" ", keep) for t in texts)]
        tails = [t if head is None else t[len(head) + 1:] for t, head in zip(texts, heads, strict=True)]
        ids, mask = self._arrays(tails)
        redo = [i for i, head in enumerate(heads) if head is not None and mask[i, -1] == 0]
        if redo:
            ids[redo], mask[redo] = self._arrays([texts[i] for i in redo])
        return ids, mask
