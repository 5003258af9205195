"""The models' input: ``event_ids`` fitted to a model's positions the same way in Spark and NumPy, the
event encoder's pooling, and the calibration of probabilities."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from propensity.core.schema import TASKS
from propensity.core.sequence import FIELDS, TARGET_TYPE
from propensity.models.calibration import Calibration, fit_calibration, fit_task
from propensity.models.sequence import FlatSequences, events_in, fit_positions, fixed_positions


def _sequence(events: int, start: int = 1) -> list[int]:
    target = [TARGET_TYPE, 7, 0, 0, 0, 0, 3, 0]
    body = [v for e in range(events) for v in [1 + e % 7, 7, start + e, 2, 3, 100 + e, 4, 5]]
    return target + body


def test_fit_positions_keeps_the_target_and_the_newest_events() -> None:
    rows = [_sequence(0), _sequence(2), _sequence(5), None, []]
    out = fit_positions(rows, 4)
    assert out.shape == (5, 4 * FIELDS) and out.dtype == np.int64
    assert list(out[0]) == _sequence(0) + [0] * 3 * FIELDS
    assert list(out[1]) == _sequence(2) + [0] * FIELDS
    assert list(out[2, :FIELDS]) == _sequence(5)[:FIELDS]  # the target stays
    assert list(out[2, FIELDS:]) == _sequence(5)[-3 * FIELDS:]  # the newest three events
    assert not out[3].any() and not out[4].any()
    with pytest.raises(ValueError, match="at least 2"):
        fit_positions(rows, 1)


def _fit_one(row: list[int], positions: int) -> list[int]:
    """One row fitted by hand: the target, then the newest events, then zeros."""
    if len(row) < FIELDS:
        return [0] * positions * FIELDS
    events = row[FIELDS:][-(positions - 1) * FIELDS:]
    return row[:FIELDS] + events + [0] * ((positions - 1) * FIELDS - len(events))


def test_flat_rows_fit_like_one_row_at_a_time() -> None:
    rng = np.random.default_rng(3)
    rows = [list(rng.integers(1, 50, size=n)) for n in (0, 3, 8, 12, 16, 40, 41, 200)]
    # rows back to back after 5 unrelated values, in shuffled storage order (as Arrow may slice them)
    order = rng.permutation(len(rows))
    values, starts = [9] * 5, np.zeros(len(rows), dtype=np.int64)
    for i in order:
        starts[i] = len(values)
        values += rows[i]
    lengths = np.array([len(r) for r in rows])
    for positions in (2, 4, 30):
        got = FlatSequences(np.array(values), starts, lengths).fit(positions)
        assert got.tolist() == [_fit_one(r, positions) for r in rows]


def test_spark_and_numpy_fit_the_same_ids(spark: SparkSession) -> None:
    rows = [_sequence(n) for n in (0, 1, 3, 4, 9)]
    df = spark.createDataFrame([(r,) for r in rows], "ids array<int>")
    got = [r[0] for r in df.select(fixed_positions(F.col("ids"), 4)).collect()]
    assert np.array_equal(np.array(got), fit_positions(rows, 4))
    assert [r[0] for r in df.select(events_in(F.col("ids"))).collect()] == [0, 1, 3, 4, 9]


def test_calibration_recovers_a_planted_platt_map_per_platform() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    logits = rng.normal(size=n) * 2
    platforms = rng.choice([11, 22], size=n)
    true = 0.5 * logits + np.where(platforms == 11, -1.0, 0.5)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true))).astype(float)
    fitted = fit_task(logits, labels, platforms)
    assert fitted.slope == pytest.approx(0.5, abs=0.05)
    assert fitted.intercepts["11"] == pytest.approx(-1.0, abs=0.1)
    assert fitted.intercepts["22"] == pytest.approx(0.5, abs=0.1)
    probs = fitted.apply(logits, platforms)
    for platform in (11, 22):
        rows = platforms == platform
        assert probs[rows].sum() / labels[rows].sum() == pytest.approx(1.0, abs=0.03)
    ranked = np.argsort(probs[platforms == 11])  # monotone within a platform: the order is unchanged
    assert np.array_equal(ranked, np.argsort(logits[platforms == 11]))


def test_calibration_round_trips_and_unknown_platforms_use_the_shared_intercept(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, len(TASKS)))
    labels = (rng.random((500, len(TASKS))) < 0.3).astype(float)
    mask = np.ones_like(labels)
    mask[:, 1] = 0  # no click labels: click is left as it is
    platforms = rng.choice([3, 4], size=500)
    calibration = fit_calibration(logits, labels, mask, platforms)
    assert set(calibration.tasks) == {"purchase", "churn"}
    calibration.save(folder)
    loaded = Calibration.load(folder)
    np.testing.assert_allclose(loaded.apply(logits, platforms), calibration.apply(logits, platforms))
    np.testing.assert_allclose(loaded.apply(logits, platforms)[:, 1], 1 / (1 + np.exp(-logits[:, 1])))
    unseen = loaded.apply(logits[:2], np.array([999, 999]))
    shared = loaded.tasks["purchase"]
    np.testing.assert_allclose(unseen[:, 0], 1 / (1 + np.exp(-(shared.slope * logits[:2, 0] + shared.intercept))))
    assert Calibration.load(folder / "missing").tasks == {}


def test_pooling_ignores_padding() -> None:
    from propensity.core.config import TeacherSettings
    from propensity.models.encoder import EventEncoder, bert_config

    torch.manual_seed(0)
    encoder = EventEncoder(bert_config(TeacherSettings(hidden_size=16, num_layers=1, num_heads=2,
                                                       intermediate_size=32, max_length=12, dropout=0.0))).eval()
    ids = torch.tensor(fit_positions([_sequence(3)], 6)).view(1, 6, FIELDS)
    longer = torch.tensor(fit_positions([_sequence(3)], 12)).view(1, 12, FIELDS)
    with torch.no_grad():
        torch.testing.assert_close(encoder.pooled(ids), encoder.pooled(longer), atol=1e-5, rtol=1e-5)


def _padded_ids(event_counts: list[int], positions: int, seed: int = 0) -> torch.Tensor:
    """``(rows, positions, FIELDS)`` ids: a target and ``n`` random events per row, zero padding after."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((len(event_counts), positions, FIELDS), dtype=np.int64)
    for i, n in enumerate(event_counts):
        rows[i, 0, :2] = [TARGET_TYPE, 3]
        rows[i, 1:n + 1] = rng.integers(1, 8, size=(n, FIELDS))
    return torch.tensor(rows)


def test_trim_padding_cuts_the_padding_every_row_shares_and_keeps_the_states() -> None:
    from propensity.core.config import TeacherSettings
    from propensity.models.encoder import EventEncoder, bert_config, trim_padding

    torch.manual_seed(0)
    encoder = EventEncoder(bert_config(TeacherSettings(hidden_size=16, num_layers=2, num_heads=2,
                                                       intermediate_size=32, max_length=12, dropout=0.0))).eval()
    ids = _padded_ids([2, 5, 0, 3], 12)
    trimmed = trim_padding(ids)
    assert trimmed.shape == (4, 6, FIELDS)
    torch.testing.assert_close(trimmed, ids[:, :6], rtol=0, atol=0)
    with torch.no_grad():
        whole, mask = encoder(ids)
        cut, _ = encoder(trimmed)
    kept = mask[:, :6].bool()
    torch.testing.assert_close(cut[kept], whole[:, :6][kept], atol=1e-5, rtol=1e-5)
    no_target = ids.clone()
    no_target[2] = 0  # a row of padding only: the batch stays whole
    assert trim_padding(no_target).shape == ids.shape
    assert trim_padding(ids[:0]).shape == (0, 12, FIELDS)


def test_grouped_batches_keep_every_row_with_its_columns_and_group_lengths() -> None:
    from propensity.stages.training.loaders import grouped_by_length, sequence_lengths

    rng = np.random.default_rng(5)
    counts = rng.integers(0, 30, size=100).tolist()
    flat = _padded_ids(counts, 32).reshape(100, -1)
    batches = [{"event_ids": flat[i:i + 16], "row": torch.arange(i, min(i + 16, 100))} for i in range(0, 100, 16)]
    regrouped = list(grouped_by_length(batches, 16, torch.Generator().manual_seed(0), group=4))
    assert len(regrouped) == len(batches)
    rows = torch.cat([b["row"] for b in regrouped])
    assert sorted(rows.tolist()) == list(range(100))
    torch.testing.assert_close(torch.cat([b["event_ids"] for b in regrouped]), flat[rows], rtol=0, atol=0)
    # within each pool of 4 batches (64 rows; the last pool 36) the batches hold consecutive lengths
    for pool in (regrouped[:4], regrouped[4:]):
        spans = sorted((int(sequence_lengths(b["event_ids"]).min()), int(sequence_lengths(b["event_ids"]).max()))
                       for b in pool)
        assert all(high <= next_low for (_, high), (next_low, _) in pairwise(spans))
    assert [len(b["row"]) for b in regrouped[4:]].count(4) == 1  # 36 rows: two full batches and one of 4
