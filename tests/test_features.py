"""Point-in-time features, labels, behaviour text and snapshot partitions on hand-built events.

Two worlds: a small hand-built one whose rows are checked value by value (every label
edge of the label definitions (docs/labels.md), an exact ``behavior_text``), and a random one checked against
an independent pandas computation (eligibility, labels, features, text) and used for the
point-in-time proofs (future events change no feature; dropping them changes nothing).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from propensity.core.config import Config, FeaturesConfig
from propensity.core.datasets import SnapshotPlan, plan_from_range, plan_snapshots, training_plan
from propensity.core.errors import DataNotReadyError, TableNotFoundError
from propensity.core.schema import (
    BEHAVIOUR_EVENT_TYPES,
    EVENT_TYPES,
    FEATURE_COLUMNS,
    INT_FEATURES,
    LABEL_COLUMNS,
)
from propensity.core.sequence import AGE_BOUNDS, FIELD_SIZES, FIELDS, GAP_BUCKETS, SEQUENCE_COLUMN, TARGET_TYPE
from propensity.core.tables import TABLES
from propensity.stages.features import build_training_examples, ensure_snapshots, write_snapshot

T = date(2026, 3, 1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)
EVENTS_SCHEMA = TABLES["events"].ddl_columns()
KEY = ("user_id", "platform")
POINT_IN_TIME = ("user_id", "platform", "behavior_text", SEQUENCE_COLUMN, *FEATURE_COLUMNS)

# (user, platform, time, type, item, category, brand, price)
Event = tuple[str, str, datetime, str, str | None, str | None, str | None, float | None]


def _view(user: str, platform: str, at: datetime, etype: str = "view") -> Event:
    return (user, platform, at, etype, "i1", "home.lamp", "ikea", 30.0)


HAND_EVENTS: list[Event] = [
    # purchase exactly at T: a label, not a feature
    _view("u_at_t", "shop", T0 - HOUR), _view("u_at_t", "shop", T0, "purchase"),
    # purchase exactly at T + 7d: outside the purchase horizon, inside the churn horizon
    _view("u_horizon", "shop", T0 - 2 * DAY), _view("u_horizon", "shop", T0 + 7 * DAY, "purchase"),
    # a view exactly at T + 30d is outside the churn horizon: churned
    _view("u_churn", "shop", T0 - 2 * DAY), _view("u_churn", "shop", T0 + 30 * DAY),
    # a view exactly at T - 30d is in the lookback; the last second of each horizon counts
    _view("u_edge", "shop", T0 - 30 * DAY), _view("u_edge", "shop", T0 + 7 * DAY - SECOND, "purchase"),
    _view("u_edge", "shop", T0 + 30 * DAY - SECOND),
    # one second older than the lookback: not eligible, whatever its future
    _view("u_old", "shop", T0 - 30 * DAY - SECOND), _view("u_old", "shop", T0 + HOUR, "purchase"),
    # impressions without a click; a past click is a feature, not a label
    _view("u_ads", "app", T0 - 3 * DAY), _view("u_ads", "app", T0 - DAY, "ad_impression"),
    _view("u_ads", "app", T0 - DAY, "ad_click"), _view("u_ads", "app", T0 + DAY, "ad_impression"),
    # impression and click exactly at T + 7d: no impression in the horizon -> NULL
    _view("u_noimp", "app", T0 - DAY), _view("u_noimp", "app", T0 + 7 * DAY, "ad_impression"),
    _view("u_noimp", "app", T0 + 7 * DAY, "ad_click"),
    # two platforms: click and purchase on shop only
    _view("u_cross", "shop", T0 - 5 * DAY), _view("u_cross", "app", T0 - 4 * DAY),
    _view("u_cross", "shop", T0, "ad_impression"), _view("u_cross", "shop", T0, "ad_click"),
    _view("u_cross", "shop", T0 + DAY, "purchase"), _view("u_cross", "app", T0 + 2 * DAY, "ad_impression"),
    # active on app and market: market activity shows in the app row's features
    _view("u_other", "app", T0 - 5 * DAY), _view("u_other", "market", T0 - 2 * DAY),
    _view("u_other", "market", T0 - DAY, "purchase"), _view("u_other", "market", T0 + DAY, "purchase"),
    # only market
    _view("u_market", "market", T0 - 3 * DAY),
    # only ad events in the lookback: not eligible
    _view("u_adonly", "app", T0 - DAY, "ad_impression"), _view("u_adonly", "app", T0 + DAY, "ad_click"),
    # the exact behavior_text (max_sequence_events=4 drops the oldest; ties by platform, then type)
    ("u_text", "shop", T0 - 10 * DAY, "view", "i9", "Electronics.Smartphone", "Samsung", 260.0),
    ("u_text", "shop", T0 - 2 * DAY + 10 * HOUR, "cart", "i7", "electronics.smartphone", "apple", 999.99),
    ("u_text", "shop", T0 - 2 * DAY + 10 * HOUR, "view", "i7", "electronics.smartphone", "apple", 999.99),
    ("u_text", "app", T0 - 2 * DAY + 10 * HOUR, "cart", "i7", "electronics.smartphone", "apple", 4.99),
    ("u_text", "market", T0 - 2 * DAY + 12 * HOUR + 30 * 60 * SECOND, "favorite", "i5", "4756105", " Acme  Inc ",
     None),
]

U_TEXT = ("[app] cart electronics.smartphone apple p0 [shop] view electronics.smartphone apple p7"
          " [shop] cart electronics.smartphone apple p7 +2h [market] favorite c4756105 acme_inc +1d")

# (user, platform) -> (label_purchase, label_click, label_churn)
HAND_LABELS: dict[tuple[str, str], tuple[int | None, int | None, int | None]] = {
    ("u_at_t", "shop"): (1, None, 0),
    ("u_horizon", "shop"): (0, None, 0),
    ("u_churn", "shop"): (0, None, 1),
    ("u_edge", "shop"): (1, None, 0),
    ("u_ads", "app"): (0, 0, 1),
    ("u_noimp", "app"): (0, None, 1),
    ("u_cross", "shop"): (1, 1, 0),
    ("u_cross", "app"): (0, 0, 1),
    ("u_other", "app"): (0, None, 1),
    ("u_other", "market"): (1, None, 0),
    ("u_market", "market"): (0, None, 1),
    ("u_text", "shop"): (0, None, 1),
    ("u_text", "app"): (0, None, 1),
    ("u_text", "market"): (0, None, 1),
}


def events_frame(spark: SparkSession, events: list[Event]) -> DataFrame:
    """Rows with the ``events`` table schema; ids are deterministic per content."""
    ingested = datetime(2026, 4, 1, tzinfo=UTC)
    rows = [(i, p, u, u, t, t.date(), et, it, c, b, pr, None, None, "test", ingested)
            for i, (u, p, t, et, it, c, b, pr) in zip(events_ids(events), events, strict=True)]
    return spark.createDataFrame(rows, EVENTS_SCHEMA)


def by_key(df: DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    rows = [r.asDict() for r in df.collect()]
    keyed = {(r["user_id"], r["platform"]): r for r in rows}
    assert len(keyed) == len(rows), "duplicate (user_id, platform) rows"
    return keyed


def project(rows: dict[tuple[str, str], dict[str, Any]], columns: tuple[str, ...]) -> dict[tuple[str, str], tuple]:
    return {k: tuple(r[c] for c in columns) for k, r in rows.items()}


# ------------------------------------------------------------------------------------------------- hand-built world


@pytest.fixture(scope="module")
def hand(spark: SparkSession, make_config: Callable[..., Config]) -> dict[tuple[str, str], dict[str, Any]]:
    cfg = make_config(overrides=["features.max_sequence_events=4"])
    return by_key(build_training_examples(spark, events_frame(spark, HAND_EVENTS), cfg, T))


def test_labels_and_eligibility_at_every_edge(hand: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert {k: tuple(r[c] for c in LABEL_COLUMNS) for k, r in hand.items()} == HAND_LABELS
    assert all(r["snapshot_date"] == T for r in hand.values())


def test_features_of_hand_built_users(hand: dict[tuple[str, str], dict[str, Any]]) -> None:
    at_t = hand[("u_at_t", "shop")]
    assert (at_t["n_view_1d"], at_t["n_purchase_30d"], at_t["all_n_purchase_30d"]) == (1, 0, 0)
    assert at_t["days_since_last_event"] == pytest.approx(1 / 24)
    assert at_t["days_since_last_purchase"] == 30.0
    edge = hand[("u_edge", "shop")]
    assert (edge["n_view_1d"], edge["n_view_7d"], edge["n_view_30d"]) == (0, 0, 1)
    assert edge["days_since_last_event"] == edge["days_since_first_event"] == 30.0
    ads = hand[("u_ads", "app")]
    assert (ads["n_ad_impression_7d"], ads["n_ad_click_7d"], ads["ctr_30d"]) == (1, 1, 1.0)
    assert ads["n_view_7d"] == 1 and ads["n_ad_impression_1d"] == 1
    other = hand[("u_other", "app")]
    assert (other["n_view_30d"], other["all_n_view_30d"], other["all_n_purchase_30d"]) == (1, 2, 1)
    assert (other["other_n_behaviour_30d"], other["other_n_purchase_30d"], other["n_other_platforms_active_30d"]) \
        == (2, 1, 1)
    assert other["all_spend_30d"] == 30.0 and other["spend_30d"] == 0.0
    assert other["all_days_since_last_event"] == pytest.approx(1.0)
    assert other["days_since_last_event"] == pytest.approx(5.0)
    market = hand[("u_other", "market")]
    assert (market["n_purchase_30d"], market["spend_7d"], market["n_other_platforms_active_30d"]) == (1, 30.0, 1)
    shop = hand[("u_text", "shop")]
    assert (shop["n_cart_30d"], shop["all_n_cart_30d"], shop["carts_without_purchase_30d"]) == (1, 2, 1)
    assert (shop["distinct_categories_30d"], shop["all_distinct_categories_30d"]) == (2, 3)
    assert shop["n_other_platforms_active_30d"] == 2 and shop["all_active_days_30d"] == 2
    assert shop["avg_price_viewed_30d"] == pytest.approx((260.0 + 999.99) / 2)
    assert all(r[c] is not None for r in hand.values() for c in FEATURE_COLUMNS)


def test_behavior_text_is_exact(hand: dict[tuple[str, str], dict[str, Any]]) -> None:
    for platform in ("shop", "app", "market"):
        assert hand[("u_text", platform)]["behavior_text"] == f"{U_TEXT} <target:{platform}>"
    assert hand[("u_at_t", "shop")]["behavior_text"] == "[shop] view home.lamp ikea p3 +1h <target:shop>"


# ---------------------------------------------------------------------------------------------------- random world

PLATFORMS = ("shop", "app", "market")
EDGES = (0, -30 * 86400, -30 * 86400 - 1, -10 * 86400, -10 * 86400 - 1, 7 * 86400, 7 * 86400 - 1, 30 * 86400,
         30 * 86400 - 1, -1, -86400, -7 * 86400)
TYPE_WEIGHTS = (0.45, 0.12, 0.05, 0.05, 0.08, 0.18, 0.07)


def random_events(seed: int, users: int, start_s: int, end_s: int, prefix: str = "r") -> list[Event]:
    """Random events in ``[T + start_s, T + end_s)`` with many exact window edges."""
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    for u in range(users):
        platforms = rng.choice(PLATFORMS, size=rng.integers(1, 4), replace=False)
        for _ in range(int(rng.integers(0, 30))):
            edge = [e for e in EDGES if start_s <= e < end_s]
            offset = int(rng.choice(edge)) if edge and rng.random() < 0.15 else int(rng.integers(start_s, end_s))
            etype = str(rng.choice(EVENT_TYPES, p=TYPE_WEIGHTS))
            price = None if rng.random() < 0.1 else float(np.round(rng.lognormal(3.5, 1.2), 2))
            category = None if rng.random() < 0.1 else f"cat{rng.integers(0, 6)}.sub{rng.integers(0, 3)}"
            brand = None if rng.random() < 0.2 else f"brand{rng.integers(0, 5)}"
            events.append((f"{prefix}{u}", str(rng.choice(platforms)), T0 + timedelta(seconds=offset), etype,
                           f"i{rng.integers(0, 8)}", category, brand, price))
    return events


def reference(events: list[Event], f: FeaturesConfig) -> dict[tuple[str, str], dict[str, Any]]:
    """The label definitions (docs/labels.md) and the documented features, computed with pandas, one
    (user, platform) at a time."""
    ev = pd.DataFrame(events, columns=["user_id", "platform", "time", "event_type", "item_id", "category", "brand",
                                       "price"])
    ev["id"] = events_ids(events)
    ev["rank"] = ev["event_type"].map({t: i for i, t in enumerate(EVENT_TYPES)})
    in_lookback = (ev["time"] >= T0 - f.lookback_days * DAY) & (ev["time"] < T0)
    eligible = ev[in_lookback & ev["event_type"].isin(BEHAVIOUR_EVENT_TYPES)][["user_id", "platform"]]
    users = dict(tuple(ev.groupby("user_id")))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for user, platform in eligible.drop_duplicates().itertuples(index=False):
        everything = users[user]
        mine = everything[(everything["time"] >= T0 - f.lookback_days * DAY) & (everything["time"] < T0)]
        here = mine[mine["platform"] == platform]
        future = everything[(everything["platform"] == platform) & (everything["time"] >= T0)]

        def happens(types: tuple[str, ...], days: int, fut: pd.DataFrame = future) -> bool:
            return bool((fut["event_type"].isin(types) & (fut["time"] < T0 + days * DAY)).any())

        row: dict[str, Any] = {
            "label_purchase": int(happens(("purchase",), f.purchase_horizon_days)),
            "label_click": 1 if happens(("ad_click",), f.click_horizon_days)
            else 0 if happens(("ad_impression",), f.click_horizon_days) else None,
            "label_churn": 0 if happens(BEHAVIOUR_EVENT_TYPES, f.churn_horizon_days) else 1,
        }
        for scope, frame in (("", here), ("all_", mine)):
            for etype in EVENT_TYPES:
                for days in (1, 7, 30):
                    recent = frame[frame["time"] >= T0 - min(days, f.lookback_days) * DAY]
                    row[f"{scope}n_{etype}_{days}d"] = int((recent["event_type"] == etype).sum())
        here_beh = here[here["event_type"].isin(BEHAVIOUR_EVENT_TYPES)]
        mine_beh = mine[mine["event_type"].isin(BEHAVIOUR_EVENT_TYPES)]
        bought = here[here["event_type"] == "purchase"]
        row["spend_30d"] = float(bought["price"].fillna(0).sum())
        row["distinct_categories_30d"] = int(here_beh["category"].dropna().nunique())
        row["all_distinct_categories_30d"] = int(mine_beh["category"].dropna().nunique())
        row["carts_without_purchase_30d"] = len(set(here[here["event_type"] == "cart"]["item_id"])
                                                - set(bought["item_id"]))
        row["days_since_last_event"] = (T0 - here_beh["time"].max()).total_seconds() / 86400
        row["all_days_since_last_event"] = (T0 - mine_beh["time"].max()).total_seconds() / 86400
        row["n_other_platforms_active_30d"] = int(mine_beh[mine_beh["platform"] != platform]["platform"].nunique())
        row["behavior_text"] = reference_text(mine, f.max_sequence_events, platform)
        out[(str(user), str(platform))] = row
    return out


def events_ids(events: list[Event]) -> list[str]:
    """Deterministic ids, unique per position and content (an event keeps its id in a longer list)."""
    return [hashlib.md5(f"{i}|{e}".encode()).hexdigest() for i, e in enumerate(events)]


def reference_text(mine: pd.DataFrame, max_events: int, target: str) -> str:
    """The documented behavior_text format, written again in plain Python."""
    rows = mine.sort_values(["time", "platform", "rank", "id"]).tail(max_events).to_dict("records")
    words: list[str] = []
    previous: datetime | None = None
    for r in rows:
        time: datetime = r["time"]
        if previous is not None and (time - previous).total_seconds() >= 60:
            words.append(gap((time - previous).total_seconds()))
        words += [f"[{r['platform']}]", r["event_type"]]
        words += [w for w in (r["category"], r["brand"]) if isinstance(w, str)]
        price = r["price"]
        if isinstance(price, float) and not math.isnan(price):
            bounds = (5, 10, 25, 50, 100, 250, 500, 1000, 2500)
            words.append(f"p{sum(price >= b for b in bounds)}")
        previous = time
    assert previous is not None
    words.append(gap((T0 - previous).total_seconds()))
    return " ".join([*words, f"<target:{target}>"])


def gap(seconds: float) -> str:
    bounds = ((60, "+0m"), (300, "+1m"), (600, "+5m"), (1800, "+10m"), (3600, "+30m"), (7200, "+1h"),
              (21600, "+2h"), (43200, "+6h"), (86400, "+12h"), (172800, "+1d"), (345600, "+2d"), (604800, "+4d"),
              (1209600, "+1w"), (2419200, "+2w"))
    return next((word for bound, word in bounds if seconds < bound), "+4w")


WORLD = random_events(1, 200, -40 * 86400, 40 * 86400)


@pytest.fixture(scope="module")
def world(spark: SparkSession, make_config: Callable[..., Config]) -> dict[str, Any]:
    """Builds of the random world: full, future dropped, more future, more past, short lookback."""
    cfg = make_config(overrides=["features.max_sequence_events=12"])
    short = make_config(overrides=["features.max_sequence_events=12", "features.lookback_days=10"])
    full = events_frame(spark, WORLD)
    keys = {(u, p) for u, p, t, et, *_ in WORLD if T0 - 30 * DAY <= t < T0 and et in BEHAVIOUR_EVENT_TYPES}
    more_future = random_events(2, 250, 0, 60 * 86400)  # users r0.. overlap the world's, some are new
    more_past = [e for e in random_events(3, 200, -30 * 86400, 0) if (e[0], e[1]) in keys and e[3] != "ad_click"]
    more_past += random_events(4, 250, -90 * 86400, -30 * 86400 - 1, prefix="old")
    return {
        "cfg": cfg, "short_cfg": short,
        "full": by_key(build_training_examples(spark, full, cfg, T)),
        "no_future": by_key(build_training_examples(spark, full.where(F.col("event_time") < F.lit(T0)), cfg, T,
                                                    with_labels=False)),
        "more_future": by_key(build_training_examples(spark, events_frame(spark, WORLD + more_future), cfg, T)),
        "more_past": by_key(build_training_examples(spark, events_frame(spark, WORLD + more_past), cfg, T)),
        "short": by_key(build_training_examples(spark, full, short, T)),
    }


@pytest.mark.parametrize("which", ["full", "short"])
def test_matches_an_independent_pandas_computation(world: dict[str, Any], which: str) -> None:
    cfg: Config = world["cfg" if which == "full" else "short_cfg"]
    built = world[which]
    expected = reference(WORLD, cfg.features)
    assert set(built) == set(expected)
    assert len(expected) > 150
    for key, want in expected.items():
        got = {c: built[key][c] for c in want}
        assert got == pytest.approx(want), key
    positives = {c: sum(r[c] or 0 for r in expected.values()) for c in LABEL_COLUMNS}
    assert all(0 < n < len(expected) for n in positives.values()), positives
    assert any(r["label_click"] is None for r in expected.values())


def reference_positions(mine: pd.DataFrame, max_events: int) -> list[dict[str, Any]]:
    """The documented event_ids fields of each kept event (hashed fields as their values), in plain Python."""
    rows = mine.sort_values(["time", "platform", "rank", "id"]).tail(max_events).to_dict("records")
    out, previous = [], None
    for r in rows:
        time: datetime = r["time"]
        price = r["price"]
        known_price = isinstance(price, float) and not math.isnan(price)
        price_id = 1 + sum(price >= b for b in (5, 10, 25, 50, 100, 250, 500, 1000, 2500)) if known_price else 0
        out.append({"type": EVENT_TYPES.index(r["event_type"]) + 1, "price": price_id,
                    "gap": 0 if previous is None else bucket((time - previous).total_seconds(),
                                                              [b for b, _ in GAP_BUCKETS]),
                    "age": bucket((T0 - time).total_seconds(), list(AGE_BOUNDS)),
                    "platform": r["platform"], "category": r["category"], "brand": r["brand"],
                    "item": f"{r['platform']}:{r['item_id']}" if isinstance(r["item_id"], str) else None})
        previous = time
    return out


def bucket(value: float, bounds: list[float]) -> int:
    return 1 + sum(value >= b for b in bounds)


def test_event_ids_follow_the_documented_layout(world: dict[str, Any]) -> None:
    """Type, price, gap and age ids equal an independent computation; hashed fields map each value to one id
    in range (and NULL to 0), the same id wherever the value appears, and different values mostly apart."""
    cfg: Config = world["cfg"]
    built = world["full"]
    ev = pd.DataFrame(WORLD, columns=["user_id", "platform", "time", "event_type", "item_id", "category", "brand",
                                      "price"])
    ev["id"] = events_ids(WORLD)
    ev["rank"] = ev["event_type"].map({t: i for i, t in enumerate(EVENT_TYPES)})
    lookback = ev[(ev["time"] >= T0 - cfg.features.lookback_days * DAY) & (ev["time"] < T0)]
    seen: dict[str, dict[Any, int]] = {f: {} for f in ("platform", "category", "brand", "item")}
    for (user, platform), row in built.items():
        ids = np.asarray(row[SEQUENCE_COLUMN]).reshape(-1, FIELDS)
        mine = lookback[lookback["user_id"] == user]
        want = reference_positions(mine, cfg.features.max_sequence_events)
        assert len(ids) == len(want) + 1
        recency = bucket((T0 - mine["time"].max()).total_seconds(), [b for b, _ in GAP_BUCKETS])
        assert list(ids[0, [0, 2, 3, 4, 5, 6, 7]]) == [TARGET_TYPE, 0, 0, 0, 0, recency, 0]
        seen["platform"].setdefault(platform, int(ids[0, 1]))
        for got, expected in zip(ids[1:], want, strict=True):
            assert [got[0], got[4], got[6], got[7]] == [expected[k] for k in ("type", "price", "gap", "age")]
            for column, field in ((1, "platform"), (2, "category"), (3, "brand"), (5, "item")):
                value = expected[field]
                if value is None:
                    assert got[column] == 0
                    continue
                assert 1 <= got[column] < FIELD_SIZES[field]
                assert seen[field].setdefault(value, int(got[column])) == got[column], (field, value)
    for field, ids_of in seen.items():
        assert len(ids_of) > 2 and len(set(ids_of.values())) >= 0.9 * len(ids_of), field


def test_features_are_point_in_time(world: dict[str, Any]) -> None:
    full = project(world["full"], POINT_IN_TIME)
    assert project(world["no_future"], POINT_IN_TIME) == full
    assert project(world["more_future"], POINT_IN_TIME) == full
    assert all(r[c] is None for r in world["no_future"].values() for c in LABEL_COLUMNS)


def test_labels_ignore_the_past(world: dict[str, Any]) -> None:
    more_past = world["more_past"]
    assert project(more_past, LABEL_COLUMNS) == project(world["full"], LABEL_COLUMNS)
    assert project(more_past, POINT_IN_TIME) != project(world["full"], POINT_IN_TIME)


# ------------------------------------------------------------------------------------------ table and snapshot plan


def test_write_snapshot_replaces_only_its_partition(spark: SparkSession, make_config: Callable[..., Config]) -> None:
    cfg = make_config()
    with pytest.raises(TableNotFoundError, match="propensity ingest"):
        write_snapshot(spark, cfg, T)
    with pytest.raises(TableNotFoundError):
        plan_snapshots(spark, cfg)
    events = cfg.table("events")
    events_frame(spark, HAND_EVENTS).writeTo(events).using("delta").partitionedBy(F.col("event_date")).create()
    table = cfg.table("training_examples")
    b = T - 7 * DAY

    def snapshots() -> dict[date, list[tuple]]:
        """Every row of the table, by snapshot date (one query)."""
        found: dict[date, list[tuple]] = {}
        for r in spark.table(table).collect():
            found.setdefault(r["snapshot_date"], []).append(tuple(r))
        return {d: sorted(rs) for d, rs in found.items()}

    assert write_snapshot(spark, cfg, T) == len(HAND_LABELS)
    assert write_snapshot(spark, cfg, b, with_labels=False) == 3  # u_edge, u_old and u_text before T - 7d
    assert spark.table(table).columns == ["snapshot_date", "user_id", "platform", "behavior_text", SEQUENCE_COLUMN,
                                          *FEATURE_COLUMNS, *LABEL_COLUMNS]
    types = dict(spark.table(table).dtypes)
    assert all(types[c] == ("int" if c in INT_FEATURES else "double") for c in FEATURE_COLUMNS)
    first = snapshots()
    assert all(r[-3:] == (None, None, None) for r in first[b])

    events_frame(spark, [_view("u_new", "shop", T0 - DAY), _view("u_at_t", "app", T0 - DAY)]).writeTo(events).append()
    assert write_snapshot(spark, cfg, T) == len(HAND_LABELS) + 2
    second = snapshots()
    assert second[b] == first[b]
    columns = spark.table(table).columns
    after_t = {(r[1], r[2]): dict(zip(columns, r, strict=True)) for r in second[T]}
    assert len(after_t) == len(second[T]) and set(after_t) == set(HAND_LABELS) | {("u_new", "shop"), ("u_at_t", "app")}
    assert after_t[("u_at_t", "shop")]["n_other_platforms_active_30d"] == 1

    plan = plan_snapshots(spark, cfg)  # events dated 2026-01-29 .. 2026-03-31
    assert plan == SnapshotPlan(train=[date(2026, 2, 9), date(2026, 2, 16)], validation=date(2026, 2, 23),
                                test=date(2026, 3, 2))
    version = spark.sql(f"DESCRIBE HISTORY {table} LIMIT 1").first()["version"]  # type: ignore[index]
    ensure_snapshots(spark, cfg, SnapshotPlan(train=[b], validation=T - DAY, test=T))
    # one commit: b (unlabelled so far) and T - 1 day; T is not rebuilt
    assert spark.sql(f"DESCRIBE HISTORY {table} LIMIT 1").first()["version"] == version + 1  # type: ignore[index]
    third = snapshots()
    assert sorted(third) == [b, T - DAY, T] and third[T] == second[T]
    assert [r[:-3] for r in third[b]] == [r[:-3] for r in first[b]]
    assert all(r[-3] is not None for rs in third.values() for r in rs)

    # the model stages read the plan's snapshots and say which stage builds a missing one
    with pytest.raises(DataNotReadyError, match=r"lacks the labelled snapshot.*propensity features --training-set"):
        training_plan(spark, cfg)
    ensure_snapshots(spark, cfg, plan)
    assert training_plan(spark, cfg) == plan


def test_plan_from_range() -> None:
    f = FeaturesConfig()
    assert plan_from_range(date(2026, 1, 1), date(2026, 3, 1), f) == SnapshotPlan(
        train=[date(2026, 1, 10), date(2026, 1, 17)], validation=date(2026, 1, 24), test=date(2026, 1, 31))
    week = FeaturesConfig(churn_horizon_days=7, lookback_days=3)
    plan = plan_from_range(date(2026, 1, 1), date(2026, 3, 1), week)
    assert plan.test == date(2026, 2, 23) and plan.validation == date(2026, 2, 16)
    assert plan.train == [date(2026, 1, 5), date(2026, 1, 12), date(2026, 1, 19), date(2026, 1, 26),
                          date(2026, 2, 2), date(2026, 2, 9)]
    assert plan.all() == [*plan.train, plan.validation, plan.test]
    assert plan.describe() == ("train 2026-01-05, 2026-01-12, 2026-01-19, 2026-01-26, 2026-02-02, 2026-02-09;"
                               " validation 2026-02-16; test 2026-02-23")
    fortnight = FeaturesConfig(churn_horizon_days=7, lookback_days=3, snapshot_step_days=14, max_train_snapshots=2)
    assert plan_from_range(date(2026, 1, 1), date(2026, 3, 1), fortnight).train == [
        date(2026, 1, 12), date(2026, 1, 26)]
    dense = FeaturesConfig(train_step_days=3)
    assert plan_from_range(date(2026, 1, 1), date(2026, 3, 1), dense) == SnapshotPlan(
        train=[date(2026, 1, 8), date(2026, 1, 11), date(2026, 1, 14), date(2026, 1, 17)],
        validation=date(2026, 1, 24), test=date(2026, 1, 31))
    longer_history = FeaturesConfig(min_history_days=14)
    assert plan_from_range(date(2026, 1, 1), date(2026, 3, 1), longer_history).train == [date(2026, 1, 17)]
    with pytest.raises(DataNotReadyError, match="at least 51 days"):
        plan_from_range(date(2026, 1, 1), date(2026, 2, 19), f)
    assert plan_from_range(date(2026, 1, 1), date(2026, 2, 20), f).train == [date(2026, 1, 8)]
