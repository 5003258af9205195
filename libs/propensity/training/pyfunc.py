"""The teacher as an MLflow pyfunc model: a pandas DataFrame in, three probabilities out.

Input: ``behavior_text`` plus the aggregate feature columns the model was trained on
(numbers; cast them to double, as in the signature). Output: a DataFrame with ``purchase``,
``click`` and ``churn`` in [0, 1], one row per input row, in order.

Artifacts: ``model`` (``model.json`` + ``model.pt``: architecture, weights, feature
normalisation buffers), ``tokenizer`` (the WordPiece folder) and ``feature_stats`` (the
normalisation statistics as JSON, for people and for checks). The class lives in this
package, so the environment loading the model needs ``propensity`` installed (the wheel
on Databricks clusters).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature
from mlflow.pyfunc.model import PythonModel

from propensity.training.mlflow_utils import RegisteredModelVersion
from propensity.training.model import TASKS, PropensityModel, load_model, read_model_meta

log = logging.getLogger(__name__)

TEXT_COLUMN = "behavior_text"
PREDICT_BATCH_ROWS = 256


#: Pre-tokenizers that split words at every space, so cutting a text at a space cuts its tokens there too.
_SPACE_SPLITTING = ("WhitespaceSplit", "Whitespace", "BertPreTokenizer")
#: Normalizers that map characters one by one (nothing is merged across a space).
_PER_CHARACTER = ("NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "BertNormalizer")
#: Our tokenizer's normaliser (see :func:`propensity.tokenizer.train_tokenizer`): on ASCII text, ``str.lower``.
_NFKC_LOWERCASE = {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}


def _per_character(normalizer: dict[str, Any] | None) -> bool:
    if normalizer is None:
        return True
    if normalizer.get("type") == "Sequence":
        return all(_per_character(n) for n in normalizer.get("normalizers", []))
    return normalizer.get("type") in _PER_CHARACTER


class TailEncoder:
    """:func:`propensity.tokenizer.encode` for one ``max_length``: the same ids and mask, several times faster.

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
        """:param tokenizer: a tokenizer from :func:`propensity.tokenizer.load_tokenizer`."""
        import json

        from tokenizers import Tokenizer

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


class PropensityPyfunc(PythonModel):
    """Scores ``behavior_text`` + features with a :class:`~propensity.training.model.PropensityModel`."""

    def __init__(self) -> None:
        self.model: PropensityModel | None = None
        self.tokenizer: Any = None
        self.max_length = 0
        self.encoder: TailEncoder | None = None

    def load_context(self, context: Any) -> None:
        """Load weights and tokenizer once (MLflow calls this when the model is loaded).

        Inside a Spark task (``mlflow.pyfunc.spark_udf``) torch uses one thread: Spark already runs
        one task per core, and more threads per task made scoring several times slower.
        """
        from pyspark import TaskContext

        if TaskContext.get() is not None:
            torch.set_num_threads(1)
        self.load(Path(context.artifacts["model"]), Path(context.artifacts["tokenizer"]))

    def load(self, model_dir: Path, tokenizer_dir: Path) -> PropensityPyfunc:
        """Load from folders directly (tests, benchmarks); returns self."""
        from propensity.tokenizer import load_tokenizer

        self.model = load_model(model_dir)
        self.tokenizer = load_tokenizer(tokenizer_dir)
        self.max_length = int(read_model_meta(model_dir)["max_length"])
        self.encoder = TailEncoder(self.tokenizer, self.max_length)
        return self

    @property
    def feature_columns(self) -> list[str]:
        """Feature columns the model needs, in order."""
        if self.model is None:
            raise RuntimeError("the model is not loaded yet")
        return self.model.feature_columns

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        """Probabilities ``purchase``, ``click``, ``churn`` for each row of ``model_input``.

        :raises ValueError: a needed column is missing.
        """
        if self.model is None or self.encoder is None:
            raise RuntimeError("the model is not loaded yet")
        missing = [c for c in (TEXT_COLUMN, *self.feature_columns) if c not in model_input.columns]
        if missing:
            raise ValueError(f"input lacks column {missing[0]!r} ({len(missing)} missing); the model needs"
                             f" {TEXT_COLUMN} and {', '.join(self.feature_columns)}")
        texts = [str(t) for t in model_input[TEXT_COLUMN].fillna("")]
        features = model_input[self.feature_columns].to_numpy(dtype=np.float32, na_value=np.nan)
        out = np.zeros((len(texts), len(TASKS)), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(texts), PREDICT_BATCH_ROWS):
                stop = start + PREDICT_BATCH_ROWS
                ids, mask = self.encoder(texts[start:stop])
                logits = self.model(torch.from_numpy(ids), torch.from_numpy(mask),
                                    torch.from_numpy(features[start:stop]))
                out[start:stop] = torch.sigmoid(logits.float()).numpy()
        return pd.DataFrame(out, columns=list(TASKS), index=model_input.index)


def input_example(rows: pd.DataFrame, feature_columns: list[str]) -> pd.DataFrame:
    """The model's input columns of ``rows`` with features as float64 (the signature's types)."""
    example = rows[[TEXT_COLUMN, *feature_columns]].copy()
    example[feature_columns] = example[feature_columns].astype("float64")
    example[TEXT_COLUMN] = example[TEXT_COLUMN].astype(str)
    return example.reset_index(drop=True)


def pip_requirements() -> list[str]:
    """The model's runtime requirements, pinned to the versions installed here."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "tokenizers", "mlflow", "pandas", "numpy",
                                           "pyarrow")]


def log_pyfunc_model(model_dir: Path, tokenizer_dir: Path, stats_path: Path, example: pd.DataFrame,
                     registered_model_name: str) -> RegisteredModelVersion:
    """Log the model as a pyfunc in the active MLflow run and register a new version of it.

    :param example: a few input rows (see :func:`input_example`), used for the signature and as example.
    """
    local = PropensityPyfunc().load(model_dir, tokenizer_dir)
    output = local.predict(None, example)
    signature = infer_signature(example, output)
    info = mlflow.pyfunc.log_model(
        name="model", python_model=PropensityPyfunc(), signature=signature, input_example=example,
        artifacts={"model": str(model_dir), "tokenizer": str(tokenizer_dir), "feature_stats": str(stats_path)},
        registered_model_name=registered_model_name, pip_requirements=pip_requirements())
    run = mlflow.active_run()
    run_id = run.info.run_id if run is not None else str(info.run_id)
    return RegisteredModelVersion(name=registered_model_name, version=str(info.registered_model_version),
                                  run_id=run_id)
