"""The synthetic world: determinism, raw formats, exact dirt accounting, config, identity, learnability, and the
strength of each behaviour pattern of docs/generator.md.

Every check re-reads the written files with a small parser of its own (the documented raw formats, docs/formats.md
rules), independent of the generator's code; no Spark needed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from propensity.core.config import config_from_dict
from propensity.stages.generate import CONSUMABLES, GeneratedFeeds, generate_feeds

USERS, DAYS, SEED = 300, 45, 7
START = date(2026, 1, 1)
START_TS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
END_TS = START_TS + DAYS * 86_400

HEADERS = {
    "rees46": "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session",
    "taobao": None,
    "retailrocket": "timestamp,visitorid,event,itemid,transactionid",
    "taobao_ads": "user,time_stamp,adgroup_id,pid,nonclk,clk",
}
EVENT_TYPES = {
    "rees46": {"view": "view", "cart": "cart", "remove_from_cart": "remove_from_cart", "purchase": "purchase"},
    "taobao": {"pv": "view", "cart": "cart", "fav": "favorite", "buy": "purchase"},
    "retailrocket": {"view": "view", "addtocart": "cart", "transaction": "purchase"},
}
FEEDS = {  # manifest name -> (format, files relative to out_dir)
    "shop": ("rees46", "shop/events-*.csv"),
    "app": ("taobao", "app/events.csv"),
    "market": ("retailrocket", "market/events.csv"),
    "app_ads": ("taobao_ads", "app/ads.csv"),
}
EXPECTED_REASONS = {
    "rees46": {"bad timestamp", "missing timestamp", "missing user", "unknown event type", "negative price",
               "wrong column count"},
    "taobao": {"bad timestamp", "missing timestamp", "missing user", "unknown event type", "wrong column count"},
    "retailrocket": {"bad timestamp", "missing timestamp", "missing user", "unknown event type",
                     "wrong column count"},
    "taobao_ads": {"bad timestamp", "missing timestamp", "missing user", "clk not 0/1", "wrong column count"},
}
REES46_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$")


# ---------------------------------------------------------------------------- an independent parser


def _epoch_seconds(raw: str, fmt: str) -> int | None:
    """The event time of a raw timestamp field in unix seconds, or None when it does not parse."""
    if fmt == "rees46":
        if not REES46_TIME.match(raw):
            return None
        try:
            return int(datetime.strptime(raw, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC).timestamp())
        except ValueError:
            return None
    if not re.fullmatch(r"\d{1,16}", raw):
        return None
    return int(raw) // 1000 if fmt == "retailrocket" else int(raw)


def _reason(fields: list[str], fmt: str) -> str | None:
    """Why a raw line breaks a rule, or None for a valid line."""
    width = {"rees46": 9, "taobao": 5, "retailrocket": 5, "taobao_ads": 6}[fmt]
    if len(fields) != width:
        return "wrong column count"
    user, time = {"rees46": (7, 0), "taobao": (0, 4), "retailrocket": (1, 0), "taobao_ads": (0, 1)}[fmt]
    if not fields[user]:
        return "missing user"
    if not fields[time]:
        return "missing timestamp"
    if _epoch_seconds(fields[time], fmt) is None:
        return "bad timestamp"
    if fmt == "taobao_ads":
        return None if (fields[4], fields[5]) in (("1", "0"), ("0", "1")) else "clk not 0/1"
    kind = {"rees46": 1, "taobao": 3, "retailrocket": 2}[fmt]
    if fields[kind] not in EVENT_TYPES[fmt]:
        return "unknown event type"
    if fmt == "rees46" and float(fields[6]) < 0:
        return "negative price"
    return None


def _data_lines(out: Path, fmt: str, pattern: str) -> list[str]:
    lines: list[str] = []
    for path in sorted(out.glob(pattern)):
        text = path.read_text(encoding="utf-8").splitlines()
        if HEADERS[fmt] is not None:
            assert text[0] == HEADERS[fmt], path
            text = text[1:]
        lines.extend(text)
    return lines


def _recount(out: Path, fmt: str, pattern: str) -> tuple[dict[str, int], Counter[str], list[list[str]]]:
    """Manifest-style counts, bad lines per reason, and the distinct valid rows as fields."""
    lines = _data_lines(out, fmt, pattern)
    reasons: Counter[str] = Counter()
    valid: Counter[str] = Counter()
    for line in lines:
        why = _reason(line.split(","), fmt)
        if why is None:
            valid[line] += 1
        else:
            reasons[why] += 1
    counts = {"rows": len(lines), "bad_rows": sum(reasons.values()),
              "duplicate_rows": sum(valid.values()) - len(valid), "valid_distinct_rows": len(valid)}
    return counts, reasons, [line.split(",") for line in valid]


def _events(out: Path) -> pd.DataFrame:
    """Valid distinct behaviour events: platform, user, t (unix seconds), type, item, session (shop only), category,
    and the item's title and price from the platform's catalog."""
    frames = []
    for platform, (fmt, pattern) in FEEDS.items():
        if fmt == "taobao_ads":
            continue
        _, _, rows = _recount(out, fmt, pattern)
        items = pd.read_csv(out / platform / "items.csv", dtype=str, keep_default_na=False).set_index("item_id")
        if fmt == "rees46":
            data = [(r[7], _epoch_seconds(r[0], fmt), EVENT_TYPES[fmt][r[1]], r[2], r[8], r[4]) for r in rows]
        else:
            user, time, kind, item = (0, 4, 3, 1) if fmt == "taobao" else (1, 0, 2, 3)
            data = [(r[user], _epoch_seconds(r[time], fmt), EVENT_TYPES[fmt][r[kind]], r[item], "", "") for r in rows]
        frame = pd.DataFrame(data, columns=["user", "t", "type", "item", "session", "category"])
        if fmt != "rees46":
            frame["category"] = frame["item"].map(items["category"])
        frame = frame.assign(title=frame["item"].map(items["title"]),
                             price=frame["item"].map(items["price"]).astype(float))
        frames.append(frame.assign(platform=platform))
    events = pd.concat(frames, ignore_index=True)
    return events.assign(day=(events["t"] - START_TS) / 86_400)


def _ads(out: Path) -> pd.DataFrame:
    """Valid distinct impressions with the ad's category code: user, t, clk, category, day."""
    _, _, rows = _recount(out, "taobao_ads", "app/ads.csv")
    ads = pd.DataFrame([(r[0], int(r[1]), r[2], int(r[5])) for r in rows], columns=["user", "t", "adgroup", "clk"])
    feature = pd.read_csv(out / "app" / "ad_feature.csv", dtype=str)
    codes = pd.read_csv(out / "app" / "categories.csv", dtype=str).set_index("category_id")["category_code"]
    category = feature.set_index("adgroup_id")["cate_id"].map(codes)
    return ads.assign(category=ads["adgroup"].map(category), day=(ads["t"] - START_TS) / 86_400)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def feeds(tmp_path_factory: pytest.TempPathFactory) -> GeneratedFeeds:
    return generate_feeds(tmp_path_factory.mktemp("world") / "out", users=USERS, days=DAYS, seed=SEED)


@pytest.fixture(scope="module")
def events(feeds: GeneratedFeeds) -> pd.DataFrame:
    return _events(feeds.out_dir)


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- tests


def test_same_seed_gives_identical_bytes_and_another_seed_differs(feeds: GeneratedFeeds, tmp_path: Path) -> None:
    again = generate_feeds(tmp_path / "again", users=USERS, days=DAYS, seed=SEED)
    first, second = _files(feeds.out_dir), _files(again.out_dir)
    assert first.keys() == second.keys()
    for name, content in first.items():
        if name == "propensity.yml":  # holds absolute paths
            content = content.replace(str(feeds.out_dir).encode(), str(again.out_dir).encode())
        assert content == second[name], name
    assert again.manifest == feeds.manifest

    other = _files(generate_feeds(tmp_path / "other", users=USERS, days=DAYS, seed=SEED + 1).out_dir)
    for name in ("shop/events-000.csv", "app/events.csv", "market/events.csv", "app/ads.csv", "identity.csv"):
        assert other[name] != first[name], name


@pytest.mark.parametrize(("users", "days", "message"), [(9, 30, "--users 9"), (100, 13, "--days 13")])
def test_too_small_a_world_is_a_value_error(tmp_path: Path, users: int, days: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_feeds(tmp_path, users=users, days=days)


def test_event_feeds_follow_the_public_formats(feeds: GeneratedFeeds) -> None:
    out = feeds.out_dir
    assert feeds.start_date == START and feeds.end_date == date(2026, 2, 15)
    shop_files = sorted(out.glob("shop/events-*.csv"))
    assert 2 <= len(shop_files) <= 4
    previous_top = float("-inf")
    for path in shop_files:  # a chronological split (a few far-away duplicates aside), each file with a header
        lines = path.read_text().splitlines()
        assert lines[0] == HEADERS["rees46"]
        times = [_epoch_seconds(line.split(",")[0], "rees46") for line in lines[1:]
                 if _reason(line.split(","), "rees46") is None]
        low, high = np.quantile(np.array(times, dtype=float), [0.02, 0.98])
        assert low >= previous_top
        previous_top = float(high)
    first_app = (out / "app" / "events.csv").read_text().splitlines()[0].split(",")
    assert len(first_app) == 5 and first_app[0].isdigit()  # taobao: no header

    for fmt, pattern in (FEEDS["shop"], FEEDS["app"], FEEDS["market"], FEEDS["app_ads"]):
        _, _, rows = _recount(out, fmt, pattern)
        stamps = [_epoch_seconds(r[{"rees46": 0, "taobao": 4, "retailrocket": 0, "taobao_ads": 1}[fmt]], fmt)
                  for r in rows]
        assert all(t is not None and START_TS <= t < END_TS for t in stamps), fmt
        if fmt in EVENT_TYPES:
            kinds = {r[{"rees46": 1, "taobao": 3, "retailrocket": 2}[fmt]] for r in rows}
            assert kinds == set(EVENT_TYPES[fmt]), fmt
    _, _, shop = _recount(out, *FEEDS["shop"])
    assert all(r[7].isdigit() and len(r[7]) == 9 and re.fullmatch(r"[a-z]+\.[a-z_]+", r[4]) for r in shop)
    assert all(float(r[6]) > 0 and re.fullmatch(r"[0-9a-f-]{36}", r[8]) for r in shop)
    _, _, market = _recount(out, *FEEDS["market"])
    assert all((r[4] != "") == (r[2] == "transaction") for r in market)
    assert all(len(r[0]) == 13 for r in market)  # unix milliseconds
    _, _, ads = _recount(out, *FEEDS["app_ads"])
    assert {r[3] for r in ads} <= {"430548_1007", "430539_1007"}


def test_catalogs_share_one_taxonomy_and_match_the_event_rows(feeds: GeneratedFeeds) -> None:
    out = feeds.out_dir
    _, _, shop = _recount(out, *FEEDS["shop"])
    _, _, market = _recount(out, *FEEDS["market"])
    _, _, ads = _recount(out, *FEEDS["app_ads"])
    app_items = pd.read_csv(out / "app" / "items.csv", dtype=str)
    codes = pd.read_csv(out / "app" / "categories.csv", dtype=str)
    category_of_item = app_items.set_index("item_id")["category"]
    code_of_id = codes.set_index("category_id")["category_code"]
    _, _, app = _recount(out, *FEEDS["app"])
    assert all(category_of_item[r[1]] == code_of_id[r[2]] for r in app)  # row category_id agrees with the catalog
    feature = pd.read_csv(out / "app" / "ad_feature.csv", dtype=str)
    assert list(feature.columns) == ["adgroup_id", "cate_id", "campaign_id", "customer", "brand", "price"]
    assert set(feature["cate_id"]) <= set(codes["category_id"])
    assert {r[2] for r in ads} <= set(feature["adgroup_id"])
    for platform in ("shop", "app", "market"):
        items = pd.read_csv(out / platform / "items.csv", dtype=str, keep_default_na=False)
        assert list(items.columns) == ["item_id", "title", "category", "brand", "price"]
        assert items["item_id"].is_unique and (items["price"].astype(float) > 0).all()
        assert set(items["category"]) == set(codes["category_code"])  # one shared taxonomy
    shop_ids = set(pd.read_csv(out / "shop" / "items.csv", dtype=str)["item_id"])
    market_ids = set(pd.read_csv(out / "market" / "items.csv", dtype=str)["item_id"])
    assert {r[2] for r in shop} <= shop_ids and {r[3] for r in market} <= market_ids


def test_manifest_matches_an_independent_recount(feeds: GeneratedFeeds) -> None:
    stored = json.loads((feeds.out_dir / "manifest.json").read_text())
    assert stored["feeds"] == feeds.manifest
    assert (stored["start_date"], stored["end_date"]) == ("2026-01-01", "2026-02-15")
    for name, (fmt, pattern) in FEEDS.items():
        counts, reasons, _ = _recount(feeds.out_dir, fmt, pattern)
        assert counts == feeds.manifest[name], name
        assert set(reasons) == EXPECTED_REASONS[fmt], name
        assert 0.004 <= counts["bad_rows"] / counts["rows"] <= 0.02, name
        assert 0.004 <= counts["duplicate_rows"] / counts["rows"] <= 0.02, name
        lines = _data_lines(feeds.out_dir, fmt, pattern)
        bad = [line for line in lines if _reason(line.split(","), fmt) is not None]
        assert len(set(bad)) == len(bad), name  # bad lines are never duplicates of each other
    for name, path in (("shop_items", "shop/items.csv"), ("app_items", "app/items.csv"),
                       ("market_items", "market/items.csv"), ("app_ad_feature", "app/ad_feature.csv"),
                       ("identity", "identity.csv")):
        rows = len((feeds.out_dir / path).read_text().splitlines()) - 1
        assert feeds.manifest[name] == {"rows": rows, "bad_rows": 0, "duplicate_rows": 0, "valid_distinct_rows": rows}


def test_duplicates_are_adjacent_and_far_apart_also_across_shop_files(feeds: GeneratedFeeds) -> None:
    per_file = [path.read_text().splitlines()[1:] for path in sorted(feeds.out_dir.glob("shop/events-*.csv"))]
    where: dict[str, set[int]] = {}
    adjacent = 0
    for number, lines in enumerate(per_file):
        for i, line in enumerate(lines):
            where.setdefault(line, set()).add(number)
            adjacent += i > 0 and line == lines[i - 1]
    assert adjacent > 0
    assert any(len(files) > 1 for files in where.values())


def test_config_overlay_loads_and_points_at_existing_absolute_paths(feeds: GeneratedFeeds) -> None:
    assert feeds.config_path == feeds.out_dir / "propensity.yml"
    data = yaml.safe_load(feeds.config_path.read_text())
    cfg = config_from_dict(data)
    assert [(p.name, p.format) for p in cfg.platforms] == [("shop", "rees46"), ("app", "taobao"),
                                                          ("market", "retailrocket")]
    assert [(a.platform, a.format) for a in cfg.ads] == [("app", "taobao_ads")]
    paths = [cfg.identity] + [a.path for a in cfg.ads] + [a.ad_feature for a in cfg.ads]
    paths += [p.events for p in cfg.platforms] + [p.items for p in cfg.platforms]
    for path in paths:
        assert path is not None and Path(path).is_absolute()
        matches = list(Path("/").glob(path.lstrip("/")))
        assert matches and all(m.is_file() for m in matches), path
    assert len(list(Path("/").glob(cfg.platforms[0].events.lstrip("/")))) >= 2


def test_identity_links_real_accounts_across_platforms(feeds: GeneratedFeeds, events: pd.DataFrame) -> None:
    identity = pd.read_csv(feeds.out_dir / "identity.csv", dtype=str)
    assert list(identity.columns) == ["platform", "platform_user_id", "user_id"]
    assert not identity.duplicated(["platform", "platform_user_id"]).any()
    assert identity["user_id"].str.fullmatch(r"c\d{7}").all()
    accounts = set(events[["platform", "user"]].itertuples(index=False, name=None))
    ads_users = {("app", u) for u in _ads(feeds.out_dir)["user"]}
    linked = set(identity[["platform", "platform_user_id"]].itertuples(index=False, name=None))
    assert linked <= accounts | ads_users
    assert 0.55 <= len(linked) / len(accounts | ads_users) <= 0.85
    per_person = identity.groupby("user_id")["platform"].nunique()
    assert (per_person >= 2).sum() >= 20  # the same person under different ids on several platforms
    assert per_person.max() <= 3 and not identity.duplicated(["user_id", "platform"]).any()


# Windows that fit a 45-day history: features [T - 21, T), labels [T, T + 7) and [T, T + 21).
T_DAY, LOOKBACK, CHURN_HORIZON = 23, 21, 21


def _labels(events: pd.DataFrame) -> pd.DataFrame:
    """One row per (platform, user) active before T: labels and two simple features."""
    past = events[(events["day"] >= T_DAY - LOOKBACK) & (events["day"] < T_DAY)]
    future = events[events["day"] >= T_DAY]
    rows = past.groupby(["platform", "user"])["day"].max().rename("last_day").reset_index()

    def accounts(frame: pd.DataFrame) -> set[tuple[str, str]]:
        return set(frame[["platform", "user"]].itertuples(index=False, name=None))

    carters = accounts(past[(past["day"] >= T_DAY - 7) & (past["type"] == "cart")])
    buyers = accounts(future[(future["day"] < T_DAY + 7) & (future["type"] == "purchase")])
    stayers = accounts(future[future["day"] < T_DAY + CHURN_HORIZON])
    keys = list(rows[["platform", "user"]].itertuples(index=False, name=None))
    return rows.assign(purchase=[k in buyers for k in keys], churn=[k not in stayers for k in keys],
                       active7=rows["last_day"] >= T_DAY - 7, cart7=[k in carters for k in keys])


def test_labels_have_sensible_rates_and_learnable_signal(events: pd.DataFrame) -> None:
    labels = _labels(events)
    for platform, group in labels.groupby("platform"):
        assert len(group) >= 60, platform
        assert 0.05 <= group["purchase"].mean() <= 0.5, (platform, group["purchase"].mean())
        assert 0.08 <= group["churn"].mean() <= 0.55, (platform, group["churn"].mean())
    with_cart, without = labels[labels["cart7"]], labels[~labels["cart7"]]
    assert with_cart["purchase"].mean() > 1.8 * without["purchase"].mean()
    recent, lapsed = labels[labels["active7"]], labels[~labels["active7"]]
    assert lapsed["churn"].mean() > 2.5 * recent["churn"].mean()
    assert recent["churn"].mean() > 0.03  # not trivially predictable from recency
    assert with_cart["purchase"].mean() < 0.8


def _with_person(frame: pd.DataFrame, out: Path) -> pd.DataFrame:
    """Add the global ``person`` id of linked accounts (NaN where the identity file has no link)."""
    identity = pd.read_csv(out / "identity.csv", dtype=str)
    identity = identity.rename(columns={"platform_user_id": "user", "user_id": "person"})
    return frame.merge(identity, on=["platform", "user"], how="left")


def test_churn_carries_cross_platform_signal(feeds: GeneratedFeeds, events: pd.DataFrame) -> None:
    labels = _with_person(_labels(events), feeds.out_dir).dropna(subset=["person"])
    other = labels[["person", "platform", "active7"]].rename(
        columns={"platform": "other_platform", "active7": "active_elsewhere"})
    pairs = labels.merge(other, on="person")
    pairs = pairs[pairs["platform"] != pairs["other_platform"]]
    per_account = pairs.groupby(["platform", "user"]).agg(churn=("churn", "first"),
                                                          elsewhere=("active_elsewhere", "max"))
    assert len(per_account) >= 40
    active_there = per_account[per_account["elsewhere"]]
    lapsed_there = per_account[~per_account["elsewhere"]]
    assert lapsed_there["churn"].mean() > 1.5 * active_there["churn"].mean()


def test_clicks_follow_category_interest_on_any_platform(feeds: GeneratedFeeds, events: pd.DataFrame) -> None:
    ads = _ads(feeds.out_dir).assign(platform="app")
    future = ads[ads["day"] >= T_DAY]
    past = events[(events["day"] < T_DAY) & (events["type"] == "view")]

    window = future[future["day"] < T_DAY + 7]
    active = set(past.loc[past["platform"] == "app", "user"])
    click_label = window[window["user"].isin(active)].groupby("user")["clk"].max()
    assert len(click_label) >= 50
    assert 0.08 <= click_label.mean() <= 0.6

    app_views = past.loc[past["platform"] == "app", ["user", "category"]].drop_duplicates().assign(seen=1)
    on_app = future.merge(app_views, on=["user", "category"], how="left")
    seen = on_app["seen"].notna()
    assert on_app.loc[seen, "clk"].mean() > 1.5 * on_app.loc[~seen, "clk"].mean()

    # Cross-platform: views on shop/market (linked through identity) predict clicks on app ads.
    elsewhere = _with_person(past[past["platform"] != "app"], feeds.out_dir).dropna(subset=["person"])
    elsewhere = elsewhere[["person", "category"]].drop_duplicates().assign(seen=1)
    known = _with_person(future, feeds.out_dir)
    known = known[known["person"].isin(set(elsewhere["person"]))].merge(elsewhere, on=["person", "category"],
                                                                        how="left")
    hit = known["seen"].notna()
    assert len(known) >= 150
    assert known.loc[hit, "clk"].mean() > 1.5 * known.loc[~hit, "clk"].mean()


# ---------------------------------------------------------------------------- behaviour patterns (docs/generator.md)

# A bigger world than the format checks need, so that every pattern has a few hundred cases to measure. The numbers in
# the comments are what this world gives, and what the first generator (before missions) gave on the same settings.
PATTERN_USERS, PATTERN_DAYS = 1200, 60
KEY = ["platform", "user", "item"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Valid distinct behaviour events of the bigger world, with the linked ``person`` (NaN when not linked)."""
    out = generate_feeds(tmp_path_factory.mktemp("patterns") / "out", users=PATTERN_USERS, days=PATTERN_DAYS,
                         seed=SEED).out_dir
    return _with_person(_events(out), out)


def _of_type(events: pd.DataFrame, kind: str, columns: list[str]) -> pd.DataFrame:
    return events.loc[events["type"] == kind, columns].reset_index(drop=True)


def test_purchases_follow_repeated_views_of_the_same_item(world: pd.DataFrame) -> None:
    """Consideration: the bought item was looked at several times before, longer for pricier subcategories."""
    buys = _of_type(world, "purchase", [*KEY, "t", "category"])
    views = _of_type(world, "view", [*KEY, "t", "price", "category"])
    before = buys.reset_index().merge(views[[*KEY, "t"]], on=KEY, suffixes=("", "_view"))
    before = before[before["t_view"] < before["t"]]
    looks = before.groupby("index").size().reindex(buys.index, fill_value=0)
    assert len(buys) >= 2000
    assert (looks >= 2).mean() >= 0.78  # 0.83 (first generator 0.73)
    assert (looks >= 3).mean() >= 0.55  # 0.66 (0.43)
    # The more often a person looked at an item, the likelier they bought it.
    per_item = views.groupby(KEY).size().rename("looks").reset_index()
    per_item = per_item.merge(buys[KEY].drop_duplicates().assign(bought=1), on=KEY, how="left").fillna({"bought": 0})
    rate = per_item.groupby(per_item["looks"].clip(upper=4))["bought"].mean()
    assert rate.is_monotonic_increasing and rate[4] > 8 * rate[1], rate.to_dict()  # 0.013 0.045 0.089 0.19 (similar)
    # Pricier needs are considered longer: days from the first look at a durable item to buying it (a consumable's
    # first look may be the purchase one cycle earlier).
    first_look = before.groupby("index")["t_view"].min()
    buys["days"] = (buys["t"] - first_look.reindex(buys.index)) / 86_400
    buys = buys[~buys["category"].isin(list(CONSUMABLES))]
    median_price = buys["category"].map(views.groupby("category")["price"].median())
    pricey, cheap = buys.loc[median_price >= 200, "days"], buys.loc[median_price < 50, "days"]
    assert len(cheap) >= 300 and pricey.median() > 1.3 * cheap.median()  # 2.04 vs 1.36 days (2.9 vs 3.9)


def test_carts_are_mostly_abandoned_and_some_bought_on_a_later_visit(world: pd.DataFrame) -> None:
    """About 70% of carted items are never bought; of the bought ones many on a later day, after a return."""
    carts = _of_type(world, "cart", [*KEY, "t"]).groupby(KEY)["t"].min().rename("t_cart").reset_index()
    carts = carts[carts["t_cart"] < START_TS + (PATTERN_DAYS - 7) * 86_400]  # at least a week left to buy
    buys = _of_type(world, "purchase", [*KEY, "t"])
    after = carts.merge(buys, on=KEY)
    after = after[after["t"] >= after["t_cart"]].groupby(KEY)["t"].min().rename("t_buy").reset_index()
    carts = carts.merge(after, on=KEY, how="left")
    bought = carts["t_buy"].notna()
    later_day = bought & ((carts["t_buy"] - START_TS) // 86_400 > (carts["t_cart"] - START_TS) // 86_400)
    assert len(carts) >= 3000
    assert 0.6 <= 1 - bought.mean() <= 0.8  # 0.68 abandoned (first generator 0.53)
    assert later_day.sum() >= 0.3 * bought.sum()  # 46% of the bought ones (53%)
    # Abandoned carts are often looked at again on a later day (the person comes back, then drops it or not).
    views = _of_type(world, "view", [*KEY, "t"]).merge(carts[~bought], on=KEY)
    again = views[(views["t"] - START_TS) // 86_400 > (views["t_cart"] - START_TS) // 86_400]
    assert again[KEY].drop_duplicates().shape[0] >= 0.25 * (~bought).sum()  # 45% (45%)


def test_consumables_are_bought_again_on_a_personal_cycle(world: pd.DataFrame) -> None:
    """Regular buyers repurchase the same consumable item every few weeks; durable items are not bought again."""
    assert set(CONSUMABLES) <= set(world["category"])
    buys = _of_type(world, "purchase", [*KEY, "t", "category"]).sort_values("t", kind="stable")
    buys["consumable"] = buys["category"].isin(list(CONSUMABLES))
    per_item = buys.groupby(KEY).agg(n=("t", "size"), consumable=("consumable", "first"))
    again = per_item.groupby("consumable")["n"].apply(lambda n: (n >= 2).mean())
    assert again[True] >= 0.1 and again[True] > 4 * again[False], again.to_dict()  # 0.14 vs 0.02 (0.05 vs 0.08)
    gaps = buys[buys["consumable"]].assign(gap=buys.groupby(KEY)["t"].diff() / 86_400).dropna(subset=["gap"])
    assert len(gaps) >= 100 and 10 <= gaps["gap"].median() <= 30  # 193 gaps, median 16.5 days (16 gaps)
    # Regular: most intervals of an item bought three times or more lie near its median interval (0.6-1.5 times it);
    # for the exponential intervals of a Poisson process that share would be 0.31.
    regular = gaps.groupby(KEY)["gap"].agg(["median", "size"])
    regular = regular[regular["size"] >= 2]
    near = gaps.merge(regular.reset_index(), on=KEY)
    near = (near["gap"] >= 0.6 * near["median"]) & (near["gap"] <= 1.5 * near["median"])
    assert len(regular) >= 20 and near.mean() >= 0.55  # 0.70 over 43 items (2 items)


def test_linked_persons_research_on_one_platform_and_buy_on_another(world: pd.DataFrame) -> None:
    """A purchase often follows views of the same product (its title) on another platform of the same person."""
    linked = world.dropna(subset=["person"])
    platforms = linked.groupby("person")["platform"].nunique()
    linked = linked[linked["person"].map(platforms) >= 2]
    buys = _of_type(linked, "purchase", ["person", "platform", "title", "t"])
    views = _of_type(linked, "view", ["person", "platform", "title", "t"])
    seen = buys.reset_index().merge(views, on=["person", "title"], suffixes=("", "_view"))
    seen = seen[(seen["platform_view"] != seen["platform"]) & (seen["t_view"] < seen["t"])
                & (seen["t_view"] >= seen["t"] - 14 * 86_400)]
    assert len(buys) >= 500
    assert seen["index"].nunique() >= 0.12 * len(buys)  # 20% (first generator 0: no shared products)
    assert seen["platform"].nunique() == 3  # bought on every platform after research elsewhere


def test_sessions_keep_to_one_need(world: pd.DataFrame) -> None:
    """The views of a shop session mostly stay in one subcategory and price range."""
    views = world[(world["platform"] == "shop") & (world["type"] == "view")]
    views = views[views.groupby("session")["t"].transform("size") >= 3]

    def modal_share(frame: pd.DataFrame) -> float:
        counts = frame.groupby(["session", "category"]).size()
        return float((counts.groupby(level=0).max() / counts.groupby(level=0).sum()).mean())

    rng = np.random.default_rng(0)
    shuffled = views.assign(category=views.groupby("user")["category"].transform(lambda c: rng.permutation(c.values)))
    assert views["session"].nunique() >= 3000
    assert modal_share(views) >= 0.8  # 0.89 (first generator 0.67)
    assert modal_share(views) > modal_share(shuffled) + 0.3  # the same person's views shuffled: 0.43 (0.41)
    assert np.log(views["price"]).groupby(views["session"]).std().mean() < 0.6  # 0.45 (0.87)


def test_platforms_are_adopted_late_and_some_accounts_stay_sparse(world: pd.DataFrame) -> None:
    """Accounts opened weeks after the person's first event elsewhere; cold starts: few events here, more elsewhere."""
    linked = world.dropna(subset=["person"])
    linked = linked[linked["person"].map(linked.groupby("person")["platform"].nunique()) >= 2]  # several platforms
    first = linked.groupby(["person", "platform"])["t"].min().rename("first").reset_index()
    first["person_first"] = first["person"].map(linked.groupby("person")["t"].min())
    late = first["first"] >= first["person_first"] + 14 * 86_400
    assert late.mean() >= 0.11  # 0.17 (first generator 0.08)
    # At a snapshot: (person, platform) rows with one to three events in the lookback and history on another platform.
    t_day = PATTERN_DAYS // 2
    past = linked[(linked["day"] >= t_day - 30) & (linked["day"] < t_day)]
    rows = past.groupby(["person", "platform"]).size().rename("n").reset_index()
    rows["elsewhere"] = rows["person"].map(rows.groupby("person")["n"].sum()) - rows["n"]
    cold = rows[(rows["n"] <= 3) & (rows["elsewhere"] > 0)]
    assert len(cold) >= 0.025 * len(rows)  # 20 of 274 rows, 7.3% (1.1%)
