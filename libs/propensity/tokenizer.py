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
``tokenizer_config.json``); log that folder as an MLflow artifact. :func:`training_corpus`
streams the training texts (behaviour texts, item titles) from the tables.
:func:`tokenize_column` adds fixed-length ``input_ids`` / ``attention_mask`` arrays in
Spark with an iterator pandas UDF that loads the tokenizer once per Python worker.
"""

from __future__ import annotations

import functools
import itertools
import string
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import PreTrainedTokenizerFast

from propensity.config import Config
from propensity.tables import require_table

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


def training_corpus(spark: SparkSession, cfg: Config, snapshot_dates: Sequence[date] | None = None,
                    with_titles: bool = True) -> Iterator[str]:
    """Texts to train the tokenizer on, streamed to the driver partition by partition.

    Distinct ``behavior_text`` values of ``training_examples`` (of ``snapshot_dates``, or all),
    then, with ``with_titles``, the distinct non-blank item titles of ``items`` if that table exists.

    :raises TableNotFoundError: ``training_examples`` does not exist (run ``propensity features``).
    """
    examples = spark.table(require_table(spark, cfg, "training_examples", "features"))
    if snapshot_dates is not None:
        examples = examples.where(F.col("snapshot_date").isin(list(snapshot_dates)))
    frames = [examples.select(F.col("behavior_text").alias("text")).distinct()]
    items = cfg.table("items")
    if with_titles and spark.catalog.tableExists(items.replace("`", "")):
        titles = spark.table(items).select(F.trim("title").alias("text"))
        frames.append(titles.where(F.col("text").isNotNull() & (F.col("text") != "")).distinct())
    for frame in frames:
        for row in frame.toLocalIterator():
            yield row["text"]


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


def tokenize_column(df: DataFrame, tokenizer_path: str, max_length: int, text_col: str = "behavior_text") -> DataFrame:
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
