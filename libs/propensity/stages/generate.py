"""Synthetic multi-platform e-commerce world, written as raw CSV feeds in public formats.

The world is a set of *persons* with latent tastes and habits. Each person uses one to
three platforms (``shop``, ``app``, ``market``) under a different user id on each. One
product universe over one category taxonomy is sold on all of them: each platform sells a
share of the products (every subcategory's best seller everywhere) under its own item ids
and at its own price (a few percent around the list price); titles and brands match, so
the same product can be recognised across platforms. Behaviour is simulated day by day;
the parameters are the ``_UPPER_CASE`` constants and :data:`_PLATFORMS` below, and
``docs/generator.md`` gives each pattern's reason (what public data or well-known facts it
reflects). No parameter is tuned to what a model can exploit.

- **usage and churn** (kept from the first generator): per (person, platform, day) an
  expected number of sessions: the person's activity times a platform rate and an account
  multiplier, a weekend bump, and a *fade* that drops it linearly to zero over one to two
  weeks before the churn moment; after churn there are no events at all. About 40% of
  persons churn inside the history (the same day on all their platforms); some accounts
  also churn on one platform only.
- **main and secondary platforms, adoption**: the first-ranked platform is the person's
  main one; a secondary one is used far less on average, with a heavy tail of accounts
  visited only now and then. 40% of secondary accounts (10% of main ones) open partway
  through the history, and 30% of those late ones are given up again after a trial of
  1-10 days. Together with bounce sessions (25-35% of sessions have one view) this gives
  accounts with one to three events on a platform and a history on another: cold starts.
- **sessions of one intent** (shopping missions): a person's sessions come in missions,
  one need each: a subcategory drawn from their tastes and a price point around their
  usual level. A mission has ``1 + Poisson(extra)`` sessions, more for pricier
  subcategories, later the same day or a few days apart, mostly on the platform it began
  on. Half of a session's views go to the mission's candidates, the rest explore: 70%
  the same subcategory, 12% another of the same top category, 18% the person's other
  tastes; items are drawn by (Zipf) popularity, the nearest to the price point of three.
- **consideration**: each mission has one to six candidate items that its sessions view
  again and again. A buying mission buys the candidate looked at most: ``P(candidate) ~
  (1 + views) ** 1.5``, three times that when carted. Whether a mission buys follows the
  person's buy propensity, affinity to the subcategory and price sensitivity; nobody buys
  the same durable product twice.
- **carts, abandonment and return**: views are carted with a probability that grows with
  the category affinity (more for candidates) and falls with the price for price-sensitive
  persons. Carts of items that are not bought are abandoned (about 70% of carted items),
  some removed again on the shop; favourites happen on the app. A bought item is carted in
  the purchase session, or in an earlier visit and bought on return (an earlier session
  of the mission, or a return visit ``Geometric(0.35)`` days later: view, purchase);
  some purchases skip the cart (the app's and the market's "buy now").
- **cross-platform purchase**: the purchase of a mission is made on another platform of the
  person (the cheapest active one selling the product) with a platform's switch rate (app
  40%, shop 20%, market 15%): a short visit there straight to the item, cart, purchase.
- **replenishment**: regular buyers of a consumable (:data:`CONSUMABLES`: coffee, tea, pet
  food, litter, detergent, paper, skincare, makeup; the chance grows with the affinity)
  repurchase their item (85%; else another of the subcategory) on a personal cycle around
  the subcategory's median (2-6 weeks, sd 25% between persons, 12% between intervals),
  skipping 10% of due purchases, on the platform they use most, in a short session.
- **ads** (app only): impressions during app sessions, partly targeted at the person's
  tastes; ``P(click) = sigmoid(base + k * affinity(person, ad category) + person bias)``,
  so clicks are predictable from past views on any platform.

Every events/ads feed then gets the dirt real feeds have: about 0.5-1% *bad* lines
(unparseable or missing timestamp, missing user id, unknown event type, negative price
for rees46, an extra or a missing field, ``clk`` not 0/1 for ads) and about 0.5-1% *exact
duplicate* lines (a valid line repeated right after itself or somewhere else in the feed,
possibly in another file). :func:`generate_feeds` counts them exactly in the manifest.

Everything is deterministic per seed: the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from propensity.core.errors import UsageError

__all__ = ["BAD_ROW_KINDS", "CONSUMABLES", "TAXONOMY", "GeneratedFeeds", "generate_feeds"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DAY_S = 86_400

#: Top category -> [(subcategory, median price)]. Category codes are ``top.sub``.
TAXONOMY: dict[str, list[tuple[str, float]]] = {
    "electronics": [("smartphone", 260.0), ("headphone", 60.0), ("tablet", 320.0), ("camera", 450.0)],
    "computers": [("notebook", 750.0), ("desktop", 820.0), ("monitor", 210.0), ("mouse", 25.0)],
    "appliances": [("vacuum", 160.0), ("refrigerator", 620.0), ("kettle", 30.0), ("washer", 470.0)],
    "apparel": [("shoes", 75.0), ("dress", 45.0), ("jacket", 115.0)],
    "furniture": [("sofa", 520.0), ("chair", 90.0), ("bed", 410.0)],
    "kids": [("toys", 22.0), ("carriage", 260.0)],
    "sport": [("bicycle", 420.0), ("fitness", 50.0), ("ski", 310.0)],
    "beauty": [("perfume", 65.0), ("skincare", 24.0), ("makeup", 16.0)],
    "auto": [("accessories", 32.0), ("tires", 125.0)],
    "construction": [("tools", 85.0), ("paint", 26.0)],
    "pets": [("food", 28.0), ("litter", 14.0)],
    "household": [("detergent", 12.0), ("paper", 9.0)],
    "grocery": [("coffee", 11.0), ("tea", 7.0)],
}

BRANDS: dict[str, list[str]] = {
    "electronics": ["samsung", "apple", "xiaomi", "huawei", "sony", "oppo"],
    "computers": ["lenovo", "hp", "asus", "acer", "dell", "logitech"],
    "appliances": ["bosch", "lg", "samsung", "philips", "indesit", "tefal"],
    "apparel": ["nike", "adidas", "zara", "puma", "reebok", "levis"],
    "furniture": ["ikea", "hoff", "askona", "lazurit"],
    "kids": ["lego", "hasbro", "mattel", "chicco"],
    "sport": ["decathlon", "stern", "nordway", "wilson"],
    "beauty": ["loreal", "nivea", "maybelline", "garnier", "dior"],
    "auto": ["michelin", "continental", "castrol", "bosch"],
    "construction": ["makita", "dewalt", "bosch", "tikkurila"],
    "pets": ["purina", "whiskas", "pedigree", "hills", "felix"],
    "household": ["ariel", "persil", "tide", "fairy", "zewa"],
    "grocery": ["nescafe", "jacobs", "lavazza", "lipton", "ahmad"],
}

#: Consumable subcategories -> median days between two purchases of the same person (each
#: regular buyer's own cycle varies around it). See the module docstring, *replenishment*.
CONSUMABLES: dict[str, float] = {
    "grocery.coffee": 16.0, "grocery.tea": 24.0, "pets.food": 24.0, "pets.litter": 16.0,
    "household.detergent": 35.0, "household.paper": 21.0, "beauty.skincare": 35.0, "beauty.makeup": 40.0,
}

# Event kinds inside the simulation.
VIEW, CART, REMOVE, FAVORITE, PURCHASE = 0, 1, 2, 3, 4

# Share of sessions starting in each UTC hour (quiet nights, evening peak).
_HOURS = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 4, 4, 4, 4, 4, 4.2, 4.5, 5, 5.5, 6, 6, 5, 3.5, 2])
_HOUR_P = _HOURS / _HOURS.sum()

_ADS_PIDS = ("430548_1007", "430539_1007")

# The behaviour parameters, one block per pattern of the module docstring. None of them is
# tuned to what a model can exploit (docs/generator.md).

# Platforms and adoption.
_SECONDARY_USE = (0.2, 1.5)  # usage multiplier of a secondary platform: LogNormal(ln a, b) (the main one: 1)
_LATE_MAIN, _LATE_SECONDARY = 0.10, 0.4  # share of accounts opened partway through the history
_TRIAL = 0.3  # share of late secondary accounts given up again 1-10 days after opening
_PRICE_SPREAD = 0.06  # sd of a platform's log price of a product around its list price

# Shopping missions: sessions of one intent, consideration.
_EXTRA_SESSIONS = (0.45, 0.3)  # extra sessions per mission ~ Poisson(max(0.15, a + b * ln(median price / 30)))
_SAME_DAY_RETURN = 0.3  # a mission's next session is later the same day (20 min to hours) ...
_RETURN_DAYS_P = 0.45  # ... else Geometric(p) days later
_HOME_STICKINESS = 3.0  # a mission's sessions prefer the platform it started on: weight 1 + this
_CONSIDERATION = 1.5  # candidate items per mission: 1 + Poisson(this), at most 6
_CANDIDATE_VIEW = 0.5  # share of a mission's views that go to one of its candidates
_CANDIDATE_SKEW = 1.6  # a candidate view looks at candidate floor(K * U ** skew): the first ones the most
_EXPLORE = (0.7, 0.12)  # other views: same subcategory, another of the same top category, else the person's tastes
_PRICE_TRIES = 3  # an item is drawn by popularity this many times; the one nearest the mission's price is kept
_MISSION_PRICE_SD = 0.5  # sd of a mission's price point (standardised log price) around the person's level
_CANDIDATE_CART = 2.0  # carts per view of a candidate relative to an exploration view
_MISSION_BUY = 0.14  # base purchase chance of a mission, times buy propensity, affinity and price terms
_LOOK_WEIGHT = 1.5  # P(the bought candidate) ~ (1 + views of it) ** this * (3 when carted)
_CART_RETURN_P = 0.35  # a cart bought in a later return visit: Geometric(p) days later

# Replenishment of consumables (CONSUMABLES).
_CONSUMABLE_TOPS = ("pets", "household", "grocery")  # tops of consumables only: Dirichlet weight 0.15, not 0.3
_REGULAR = (1.0, 0.4, 0.6)  # P(regular buyer of a consumable) = clip(a * affinity - b, 0, c)
_CYCLE_PERSON_SD = 0.25  # sd of the log of a person's cycle around the subcategory's median
_CYCLE_JITTER = 0.12  # sd of each interval relative to the person's cycle
_SKIP = 0.1  # share of due purchases made elsewhere (not in the feeds)
_SAME_ITEM = 0.85  # share of repurchases of the very same item (else another item of the subcategory)
_REPLENISH_VIEWS = 0.6  # views besides the item's own: Poisson(this), same subcategory


@dataclass(frozen=True)
class GeneratedFeeds:
    """What :func:`generate_feeds` wrote.

    :param out_dir: absolute output folder.
    :param config_path: ``out_dir / "propensity.yml"``, a config overlay naming every feed.
    :param manifest: per feed name ``{"rows", "bad_rows", "duplicate_rows", "valid_distinct_rows"}``.
    :param start_date: first day with data.
    :param end_date: first day with no data (exclusive end).
    """

    out_dir: Path
    config_path: Path
    manifest: dict[str, dict[str, int]]
    start_date: date
    end_date: date

    def format(self) -> str:
        """What was written: the date range, rows per feed and the config overlay."""
        lines = [f"wrote feeds for {self.start_date} .. {self.end_date} (exclusive) to {self.out_dir}"]
        lines += [f"  {name}: " + ", ".join(f"{k}={v}" for k, v in counts.items())
                  for name, counts in self.manifest.items() if isinstance(counts, dict)]
        lines.append(f"config overlay: {self.config_path}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _PlatformSpec:
    """Habits and raw format of one platform."""

    name: str
    format: str
    share: float  # weight when persons pick their platforms
    session_rate: float  # sessions per day at activity 1
    views_per_session: float  # mean views of a session that is not a bounce
    bounce: float  # share of sessions with one view only
    gap_s: float  # mean seconds between events in a session
    cart_rate: float  # per view, before affinity and price effects
    remove_rate: float  # share of carts that are not bought removed again
    fav_rate: float  # per view
    same_session: float  # share of carted purchases carted in the purchase session (else in an earlier visit)
    no_cart_buy: float  # share of purchases without a cart ("buy now")
    switch_rate: float  # share of purchases researched here that are made on another platform of the person
    direct_buy_rate: float  # per view, an impulse purchase without a cart
    carry: float  # share of all products the platform sells
    id_low: int  # platform user ids are drawn from [id_low, id_high)
    id_high: int
    item_low: int
    item_high: int
    kinds: dict[int, str]  # simulation kind -> raw event name


_PLATFORMS: tuple[_PlatformSpec, ...] = (
    _PlatformSpec("shop", "rees46", 0.45, 0.65, 5.5, 0.3, 60.0, 0.06, 0.25, 0.0, 0.5, 0.0, 0.2, 0.0, 0.65,
                  500_000_000, 600_000_000, 1_000_000, 60_000_000,
                  {VIEW: "view", CART: "cart", REMOVE: "remove_from_cart", PURCHASE: "purchase"}),
    _PlatformSpec("app", "taobao", 0.35, 1.00, 4.0, 0.25, 35.0, 0.04, 0.0, 0.03, 0.4, 0.3, 0.4, 0.003, 0.8,
                  1, 1_018_012, 1, 5_163_071,
                  {VIEW: "pv", CART: "cart", FAVORITE: "fav", PURCHASE: "buy"}),
    _PlatformSpec("market", "retailrocket", 0.25, 0.60, 4.0, 0.35, 70.0, 0.05, 0.0, 0.0, 0.6, 0.1, 0.15, 0.002, 0.55,
                  0, 1_407_580, 0, 466_867,
                  {VIEW: "view", CART: "addtocart", PURCHASE: "transaction"}),
)


@dataclass(frozen=True)
class _Taxonomy:
    codes: list[str]  # per subcategory, e.g. "electronics.smartphone"
    top: IntArray  # top category index per subcategory
    tops: list[str]
    log_mu: FloatArray  # log median price per subcategory
    log_sigma: FloatArray
    popularity: FloatArray  # global share of browsing per subcategory


@dataclass(frozen=True)
class _Persons:
    pref: FloatArray  # (persons, subcategories), rows sum to 1
    pref_cum: FloatArray  # cumulative pref, for sampling
    affinity: FloatArray  # pref / max pref per person, in (0, 1]
    activity: FloatArray
    price_sens: FloatArray
    price_level: FloatArray  # the standardised log price the person usually shops at
    cart_prop: FloatArray
    buy_prop: FloatArray
    click_bias: FloatArray
    join_day: FloatArray
    churn_day: FloatArray  # inf: never churns
    fade_days: FloatArray


@dataclass(frozen=True)
class _Members:
    """The accounts of one platform: one row per person using it."""

    person: IntArray
    user_id: IntArray
    mult: FloatArray
    start_day: FloatArray
    end_day: FloatArray  # churn moment on this platform (days since start), inf: never


@dataclass(frozen=True)
class _Products:
    """Every product sold anywhere; each platform sells a subset under its own item ids."""

    subcat: IntArray  # sorted ascending
    z: FloatArray  # standardised log list price within the subcategory
    price: FloatArray  # list price
    brand: list[str]
    title: list[str]
    keys: FloatArray  # subcat + cumulative popularity inside the subcategory, for sampling
    best: BoolArray  # the best seller of its subcategory (sold everywhere)


@dataclass(frozen=True)
class _Catalog:
    item_id: IntArray
    product: IntArray  # the product of each item
    subcat: IntArray  # sorted ascending
    brand: list[str]
    price: FloatArray
    z_price: FloatArray  # standardised log price within the subcategory
    category_id: IntArray  # the platform's category id per subcategory
    title: list[str]
    of_product: IntArray  # per product: its item here, or the item of its subcategory nearest in price


@dataclass(frozen=True)
class _Events:
    """Valid behaviour events of one platform, sorted by (member, time), times unique per member."""

    member: IntArray
    time: IntArray  # seconds since start_date 00:00 UTC
    item: IntArray
    kind: IntArray
    session: IntArray


@dataclass(frozen=True)
class _Sessions:
    member: IntArray
    start: IntArray  # seconds since start_date 00:00 UTC
    n_views: IntArray


@dataclass(frozen=True)
class _AdGroups:
    adgroup_id: IntArray
    subcat: IntArray
    campaign_id: IntArray
    customer: IntArray
    brand: list[str]
    price: FloatArray
    weight: FloatArray


@dataclass(frozen=True)
class _Ads:
    member: IntArray
    time: IntArray
    adgroup: IntArray
    pid: IntArray
    clk: IntArray


def generate_feeds(out_dir: Path, users: int = 2000, days: int = 60, seed: int = 7,
                   start_date: date = date(2026, 1, 1)) -> GeneratedFeeds:
    """Simulate a multi-platform e-commerce world and write its raw feeds under ``out_dir``.

    Writes ``shop/`` (rees46, three chronological files), ``app/`` (taobao events and
    taobao_ads ads), ``market/`` (retailrocket), item catalogs, ``identity.csv`` (known
    cross-platform links for about 70% of accounts), ``propensity.yml`` (a config overlay
    with absolute paths) and ``manifest.json`` (exact row, bad-row and duplicate counts).

    :param out_dir: output folder; created if missing, files of earlier runs are replaced.
    :param users: number of real persons (each has one to three platform accounts).
    :param days: length of the history in days.
    :param seed: random seed; the same arguments give byte-identical files.
    :param start_date: first day of the history (UTC).
    :returns: paths, manifest and the date range of the data.
    :raises UsageError: ``users < 10`` or ``days < 14``.
    """
    if users < 10:
        raise UsageError(f"--users {users} is too small; generate at least 10 users")
    if days < 14:
        raise UsageError(f"--days {days} is too short; generate at least 14 days of history")
    out = Path(out_dir).resolve()
    streams = [np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(12)]
    tax = _make_taxonomy(streams[0])
    persons = _make_persons(streams[1], tax, users, days)
    member_sets = _make_members(streams[2], persons, days)
    products = _make_products(streams[3], tax, users)
    catalogs = {spec.name: _make_catalog(streams[4 + i], tax, spec, products) for i, spec in enumerate(_PLATFORMS)}
    world = _World(tax, persons, member_sets, products, [catalogs[spec.name] for spec in _PLATFORMS], days,
                   start_date.weekday())
    events, sessions = _simulate(streams[7], streams[8], world)
    adgroups = _make_adgroups(streams[9], tax)
    ads = _simulate_ads(streams[10], persons, member_sets["app"], sessions["app"], adgroups, days)
    manifest = _write_all(out, streams[11], tax, member_sets, catalogs, events, ads, adgroups, start_date, days)
    end_date = start_date + timedelta(days=days)
    config_path = _write_config(out)
    (out / "manifest.json").write_text(json.dumps(
        {"seed": seed, "users": users, "days": days, "start_date": start_date.isoformat(),
         "end_date": end_date.isoformat(), "feeds": manifest}, indent=2, sort_keys=True) + "\n")
    return GeneratedFeeds(out_dir=out, config_path=config_path, manifest=manifest,
                          start_date=start_date, end_date=end_date)


# ---------------------------------------------------------------------------- the world


def _make_taxonomy(rng: np.random.Generator) -> _Taxonomy:
    """Flatten :data:`TAXONOMY` into arrays, with a global browsing popularity per subcategory."""
    tops = list(TAXONOMY)
    codes: list[str] = []
    top: list[int] = []
    mu: list[float] = []
    for t, (name, subs) in enumerate(TAXONOMY.items()):
        for sub, median in subs:
            codes.append(f"{name}.{sub}")
            top.append(t)
            mu.append(float(np.log(median)))
    popularity = rng.gamma(2.0, size=len(codes))
    return _Taxonomy(codes=codes, top=np.array(top, dtype=np.int64), tops=tops, log_mu=np.array(mu),
                     log_sigma=rng.uniform(0.3, 0.55, size=len(codes)), popularity=popularity / popularity.sum())


def _make_persons(rng: np.random.Generator, tax: _Taxonomy, n: int, days: int) -> _Persons:
    """Draw each person's latent tastes, habits, join day and churn moment."""
    n_top, n_sub = len(tax.tops), len(tax.codes)
    # General-merchandise platforms: everyday consumables are a smaller part of what people browse.
    top_pref = rng.dirichlet(np.where(np.isin(tax.tops, _CONSUMABLE_TOPS), 0.15, 0.3), size=n)
    sub_w = rng.gamma(1.0, size=(n, n_sub)) + 1e-3
    onehot = np.zeros((n_sub, n_top))
    onehot[np.arange(n_sub), tax.top] = 1.0
    sub_share = sub_w / (sub_w @ onehot)[:, tax.top]
    pref = 0.88 * top_pref[:, tax.top] * sub_share + 0.12 * tax.popularity[None, :]
    pref /= pref.sum(axis=1, keepdims=True)
    pref_cum = np.cumsum(pref, axis=1)
    pref_cum[:, -1] = 1.0
    join = np.where(rng.random(n) < 0.75, 0, rng.integers(1, max(2, days - 7), size=n)).astype(np.float64)
    span = days - join - 5.0
    churns = (rng.random(n) < 0.4) & (span > 0)
    churn_day = np.where(churns, join + 5.0 + rng.random(n) * np.maximum(span, 0.0), np.inf)
    price_sens = 1.5 * rng.beta(2.0, 2.0, size=n)
    return _Persons(
        pref=pref, pref_cum=pref_cum, affinity=pref / pref.max(axis=1, keepdims=True),
        activity=rng.lognormal(-0.245, 0.7, size=n), price_sens=price_sens,
        price_level=rng.normal(0.0, 0.45, size=n) - 0.5 * (price_sens - 0.75),
        cart_prop=rng.lognormal(-0.08, 0.4, size=n), buy_prop=rng.lognormal(-0.125, 0.5, size=n),
        click_bias=rng.normal(0.0, 0.5, size=n), join_day=join, churn_day=churn_day,
        fade_days=rng.uniform(7.0, 15.0, size=n),
    )


def _make_members(rng: np.random.Generator, persons: _Persons, days: int) -> dict[str, _Members]:
    """Give each person one to three platforms (~40% two or more) and an account on each.

    The first-ranked platform is the person's main one; the others are used less
    (:data:`_SECONDARY_USE`), are more often opened partway through the history and are
    then sometimes given up again after a trial of a few days.
    """
    n = persons.activity.size
    shares = np.array([spec.share for spec in _PLATFORMS])
    how_many = rng.choice(np.arange(1, 4), size=n, p=[0.58, 0.30, 0.12])
    # Weighted sampling without replacement via Gumbel keys: the k largest keys are chosen.
    keys = np.log(shares)[None, :] + rng.gumbel(size=(n, len(_PLATFORMS)))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    uses = rank < how_many[:, None]
    out: dict[str, _Members] = {}
    for j, spec in enumerate(_PLATFORMS):
        person = np.nonzero(uses[:, j])[0].astype(np.int64)
        m = person.size
        main = rank[person, j] == 0
        join = persons.join_day[person]
        late = rng.random(m) < np.where(main, _LATE_MAIN, _LATE_SECONDARY)
        start = np.where(late, np.floor(join + rng.random(m) * (days - join)), join)
        span = days - start - 5.0
        own_churn = (rng.random(m) < 0.12) & (span > 0)
        plat_churn = np.where(own_churn, start + 5.0 + rng.random(m) * np.maximum(span, 0.0), np.inf)
        trial = late & ~main & (rng.random(m) < _TRIAL)
        plat_churn = np.where(trial, start + 1.0 + 9.0 * rng.random(m), plat_churn)
        user_id = rng.choice(spec.id_high - spec.id_low, size=m, replace=False).astype(np.int64) + spec.id_low
        secondary = rng.lognormal(np.log(_SECONDARY_USE[0]), _SECONDARY_USE[1], size=m)
        mult = rng.lognormal(-0.1, 0.45, size=m) * np.where(main, 1.0, secondary)
        out[spec.name] = _Members(person=person, user_id=user_id, mult=mult, start_day=start,
                                  end_day=np.minimum(persons.churn_day[person], plat_churn))
    return out


def _make_products(rng: np.random.Generator, tax: _Taxonomy, users: int) -> _Products:
    """All products: every subcategory has some, log-normal list prices, Zipf popularity, a brand and a title."""
    n_sub = len(tax.codes)
    n = int(min(max(400, users * 1.5), 80_000))
    weights = tax.popularity * 0.5 + 0.5 / n_sub
    subcat = np.sort(np.concatenate([np.arange(n_sub), rng.choice(n_sub, size=n - n_sub, p=weights)]))
    subcat = subcat.astype(np.int64)
    price = np.round(np.maximum(np.exp(tax.log_mu[subcat] + tax.log_sigma[subcat] * rng.normal(size=n)), 1.0), 2)
    # Zipf popularity inside each subcategory.
    first = np.searchsorted(subcat, np.arange(n_sub))
    sizes = np.diff(np.append(first, n))
    rank = np.concatenate([rng.permutation(int(s)) for s in sizes])
    w = 1.0 / (rank + 1.0) ** 0.9
    cum = np.cumsum(w)
    seg_start = np.repeat(np.concatenate([[0.0], cum[first[1:] - 1]]), sizes)
    seg_total = np.repeat(cum[np.append(first[1:], n) - 1], sizes) - seg_start
    within = (cum - seg_start) / seg_total
    within[np.append(first[1:], n) - 1] = 1.0
    brand: list[str] = []
    title: list[str] = []
    for c, model in zip(subcat.tolist(), rng.integers(10, 999, size=n).tolist(), strict=True):
        names = BRANDS[tax.tops[int(tax.top[c])]]
        b = names[min(int(rng.zipf(1.6)) - 1, len(names) - 1)]
        brand.append(b)
        sub = tax.codes[c].split(".", 1)[1]
        title.append(f"{b.title()} {sub} {chr(65 + model % 26)}{model}")
    return _Products(subcat=subcat, z=(np.log(price) - tax.log_mu[subcat]) / tax.log_sigma[subcat], price=price,
                     brand=brand, title=title, keys=subcat + within, best=rank == 0)


def _make_catalog(rng: np.random.Generator, tax: _Taxonomy, spec: _PlatformSpec, products: _Products) -> _Catalog:
    """One platform's items: a share of all products (best sellers always), at the platform's own prices."""
    n_sub = len(tax.codes)
    n_all = products.subcat.size
    product = np.nonzero((rng.random(n_all) < spec.carry) | products.best)[0].astype(np.int64)
    n = product.size  # at most 80,000: every platform's item id range is larger
    subcat = products.subcat[product]
    price = np.round(np.maximum(products.price[product] * np.exp(rng.normal(0.0, _PRICE_SPREAD, size=n)), 1.0), 2)
    z_price = (np.log(price) - tax.log_mu[subcat]) / tax.log_sigma[subcat]
    item_id = rng.choice(spec.item_high - spec.item_low, size=n, replace=False).astype(np.int64) + spec.item_low
    if spec.format == "rees46":
        category_id = rng.choice(10**17, size=n_sub, replace=False).astype(np.int64) + 2_053_013_552_000_000_000
    else:
        category_id = rng.choice(5_162_429, size=n_sub, replace=False).astype(np.int64) + 1
    no_brand = (rng.random(n) < 0.05) if spec.format == "rees46" else np.zeros(n, dtype=bool)  # rees46 rows
    brand = ["" if blank else products.brand[p] for p, blank in zip(product.tolist(), no_brand.tolist(), strict=True)]
    # A product not sold here maps to the item of its subcategory nearest in (list) price.
    key = subcat * 1000.0 + np.clip(products.z[product], -100.0, 100.0)
    order = np.argsort(key, kind="stable")
    wanted = products.subcat * 1000.0 + np.clip(products.z, -100.0, 100.0)
    pos = np.searchsorted(key[order], wanted)
    lo, hi = order[np.clip(pos - 1, 0, n - 1)], order[np.clip(pos, 0, n - 1)]
    d_lo = np.where(subcat[lo] == products.subcat, np.abs(products.z[product[lo]] - products.z), np.inf)
    d_hi = np.where(subcat[hi] == products.subcat, np.abs(products.z[product[hi]] - products.z), np.inf)
    of_product = np.where(d_lo <= d_hi, lo, hi).astype(np.int64)
    of_product[product] = np.arange(n)
    return _Catalog(item_id=item_id, product=product, subcat=subcat, brand=brand, price=price, z_price=z_price,
                    category_id=category_id, title=[products.title[p] for p in product.tolist()],
                    of_product=of_product)


def _make_adgroups(rng: np.random.Generator, tax: _Taxonomy) -> _AdGroups:
    """Three to eight ad groups per subcategory, grouped into campaigns of one to three."""
    counts = 3 + np.minimum(rng.poisson(2.0, size=len(tax.codes)), 5)
    subcat = np.repeat(np.arange(len(tax.codes)), counts).astype(np.int64)
    n = subcat.size
    new_campaign = np.ones(n, dtype=bool)
    new_campaign[1:] = (subcat[1:] != subcat[:-1]) | (rng.random(n - 1) < 0.5)
    campaign_no = np.cumsum(new_campaign) - 1
    n_campaigns = int(campaign_no[-1]) + 1
    campaign_ids = rng.choice(423_436, size=n_campaigns, replace=False).astype(np.int64) + 1
    customers = rng.choice(255_875, size=n_campaigns, replace=False).astype(np.int64) + 1
    brand: list[str] = []
    for c in subcat.tolist():
        names = BRANDS[tax.tops[int(tax.top[c])]]
        brand.append(names[int(rng.integers(len(names)))])
    price = np.round(np.exp(tax.log_mu[subcat] + tax.log_sigma[subcat] * rng.normal(size=n)), 2)
    return _AdGroups(adgroup_id=rng.choice(846_811, size=n, replace=False).astype(np.int64) + 1, subcat=subcat,
                     campaign_id=campaign_ids[campaign_no], customer=customers[campaign_no], brand=brand,
                     price=np.maximum(price, 1.0), weight=rng.gamma(1.0, size=n) + 0.05)


# ---------------------------------------------------------------------------- behaviour


class _World:
    """Everything the behaviour simulation reads, with per-(person, platform) views of the accounts."""

    def __init__(self, tax: _Taxonomy, persons: _Persons, member_sets: dict[str, _Members], products: _Products,
                 catalogs: list[_Catalog], days: int, weekday: int) -> None:
        self.tax, self.persons, self.products, self.catalogs, self.days = tax, persons, products, catalogs, days
        self.members = [member_sets[spec.name] for spec in _PLATFORMS]
        n, n_plat = persons.activity.size, len(_PLATFORMS)
        self.member_of = np.full((n, n_plat), -1, dtype=np.int64)  # the person's account index, -1: none
        self.start = np.full((n, n_plat), np.inf)
        self.end = np.full((n, n_plat), -np.inf)
        # usage[person, platform, day]: expected sessions that day (0 before the account opens, after it ends).
        self.usage = np.zeros((n, n_plat, days))
        day = np.arange(days, dtype=np.float64)
        dow = np.where((weekday + np.arange(days)) % 7 >= 5, 1.15, 1.0)
        for j, (spec, members) in enumerate(zip(_PLATFORMS, self.members, strict=True)):
            person = members.person
            self.member_of[person, j] = np.arange(person.size)
            self.start[person, j] = members.start_day
            self.end[person, j] = members.end_day
            fade = np.clip((members.end_day[:, None] - day[None, :]) / persons.fade_days[person][:, None], 0.0, 1.0)
            active = day[None, :] >= members.start_day[:, None]
            rate = spec.session_rate * persons.activity[person] * members.mult
            self.usage[person, j, :] = rate[:, None] * fade * active * dow[None, :]
        self.of_product = np.stack([c.of_product for c in catalogs])  # (platforms, products) -> item
        self.item_offset = np.cumsum([0] + [c.item_id.size for c in catalogs])[:-1]
        self.z_price = np.concatenate([c.z_price for c in catalogs])  # by item_offset[platform] + item
        price_on = np.full((n_plat, products.subcat.size), np.inf)  # a product's price per platform, inf: not sold
        for j, c in enumerate(catalogs):
            price_on[j, c.product] = c.price
        self.price_on = price_on


def _spec_array(field: str) -> FloatArray:
    return np.array([getattr(spec, field) for spec in _PLATFORMS], dtype=np.float64)


def _sample_rows(rng: np.random.Generator, cum: FloatArray, rows: IntArray) -> IntArray:
    """For each entry of ``rows``, draw a column index from that row's cumulative distribution."""
    u = rng.random(rows.size)
    out = np.empty(rows.size, dtype=np.int64)
    step = 200_000
    for lo in range(0, rows.size, step):
        hi = min(lo + step, rows.size)
        out[lo:hi] = (cum[rows[lo:hi]] < u[lo:hi, None]).sum(axis=1)
    return np.minimum(out, cum.shape[1] - 1)


def _pick(rng: np.random.Generator, weights: FloatArray) -> IntArray:
    """A column per row with probability proportional to the row's (non-negative) weights."""
    cum = np.cumsum(weights, axis=1)
    u = rng.random(weights.shape[0]) * cum[:, -1]
    return np.minimum((cum <= u[:, None]).sum(axis=1), weights.shape[1] - 1).astype(np.int64)


def _sample_near(rng: np.random.Generator, products: _Products, subcat: IntArray, target: FloatArray) -> IntArray:
    """A product of each subcategory by popularity, the one of a few draws nearest the price point ``target``."""
    n = subcat.size
    idx = np.searchsorted(products.keys, subcat[:, None] + rng.random((n, _PRICE_TRIES)), side="right")
    idx = np.minimum(idx, products.keys.size - 1)
    best = np.argmin(np.abs(products.z[idx] - target[:, None]), axis=1)
    return idx[np.arange(n), best].astype(np.int64)


def _hour_offsets(rng: np.random.Generator, n: int) -> IntArray:
    """Seconds into the day of ``n`` session starts, following the daily rhythm."""
    return (rng.choice(24, size=n, p=_HOUR_P) * 3600 + rng.integers(0, 3600, size=n)).astype(np.int64)


def _offsets(counts: IntArray) -> IntArray:
    """Start index of each group of a flat array holding ``counts[i]`` entries of group i in order."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


class _Log:
    """Sessions and events as they are simulated, on all platforms; split per platform at the end."""

    def __init__(self) -> None:
        self.s_person: list[IntArray] = []
        self.s_platform: list[IntArray] = []
        self.s_start: list[IntArray] = []
        self.n_sessions = 0
        self.e_session: list[IntArray] = []
        self.e_time: list[IntArray] = []
        self.e_item: list[IntArray] = []
        self.e_kind: list[IntArray] = []

    def sessions(self, person: IntArray, platform: IntArray, start: IntArray) -> IntArray:
        """Add sessions; returns their ids."""
        self.s_person.append(person.astype(np.int64))
        self.s_platform.append(platform.astype(np.int64))
        self.s_start.append(start.astype(np.int64))
        ids = self.n_sessions + np.arange(person.size, dtype=np.int64)
        self.n_sessions += person.size
        return ids

    def events(self, session: IntArray, time: IntArray | FloatArray, item: IntArray, kind: int) -> None:
        self.e_session.append(session.astype(np.int64))
        self.e_time.append(np.asarray(time).astype(np.int64))
        self.e_item.append(item.astype(np.int64))
        self.e_kind.append(np.full(session.size, kind, dtype=np.int64))


def _simulate(rng: np.random.Generator, rng_replenish: np.random.Generator,
              world: _World) -> tuple[dict[str, _Events], dict[str, _Sessions]]:
    """Shopping missions and replenishment purchases of every person, as events and sessions per platform."""
    log = _Log()
    _missions(rng, world, log)
    _replenishment(rng_replenish, world, log)
    s_person, s_platform = np.concatenate(log.s_person), np.concatenate(log.s_platform)
    s_start = np.concatenate(log.s_start)
    e_session, e_time = np.concatenate(log.e_session), np.concatenate(log.e_time)
    e_item, e_kind = np.concatenate(log.e_item), np.concatenate(log.e_kind)
    e_platform = s_platform[e_session]
    views = np.bincount(e_session[e_kind == VIEW], minlength=s_person.size)
    events: dict[str, _Events] = {}
    sessions: dict[str, _Sessions] = {}
    for j, spec in enumerate(_PLATFORMS):
        sel = np.nonzero(s_platform == j)[0]
        member = world.member_of[s_person[sel], j]
        order = np.lexsort((sel, s_start[sel], member))
        new_id = np.full(s_person.size, -1, dtype=np.int64)
        new_id[sel[order]] = np.arange(sel.size)
        sessions[spec.name] = _Sessions(member=member[order], start=s_start[sel][order], n_views=views[sel][order])
        e_sel = np.nonzero(e_platform == j)[0]
        e_member = world.member_of[s_person[e_session[e_sel]], j]
        time, keep = _unique_times(e_member, e_time[e_sel], e_kind[e_sel], world.members[j].end_day, world.days)
        kept = e_sel[keep]
        events[spec.name] = _Events(member=e_member[keep], time=time, item=e_item[kept], kind=e_kind[kept],
                                    session=new_id[e_session[kept]])
    return events, sessions


def _missions(rng: np.random.Generator, world: _World, log: _Log) -> None:
    """Shopping missions: one need (a subcategory and a price point) pursued over one or more sessions.

    Sessions of a mission view its few candidate items again and again, explore more items
    of the same need, cart some; a buying mission ends with a purchase of the candidate
    looked at most, in its last session, or on another platform of the person.
    """
    tax, persons, products, days = world.tax, world.persons, world.products, world.days
    n_plat = len(_PLATFORMS)
    total = world.usage.sum(axis=1)  # (persons, days)
    extra = np.maximum(_EXTRA_SESSIONS[0] + _EXTRA_SESSIONS[1] * (tax.log_mu - np.log(30.0)), 0.15)
    per_mission = persons.pref @ (1.0 + extra)  # expected sessions per mission of each person
    counts = rng.poisson(total / per_mission[:, None])
    mp, md = np.nonzero(counts)
    reps = counts[mp, md]
    m_person = np.repeat(mp, reps).astype(np.int64)
    m_day = np.repeat(md, reps).astype(np.int64)
    n_m = m_person.size
    if n_m == 0:
        return
    m_sub = _sample_rows(rng, persons.pref_cum, m_person)
    m_target = persons.price_level[m_person] + rng.normal(0.0, _MISSION_PRICE_SD, size=n_m)
    m_home = _pick(rng, world.usage[m_person, :, m_day])
    m_start = m_day * DAY_S + _hour_offsets(rng, n_m)
    m_sessions = 1 + rng.poisson(extra[m_sub])
    n_cand = 1 + np.minimum(rng.poisson(_CONSIDERATION, size=n_m), 5)
    cand_first = _offsets(n_cand)
    cand_mission = np.repeat(np.arange(n_m), n_cand)
    cand_product = _sample_near(rng, products, m_sub[cand_mission], m_target[cand_mission])

    # Sessions: the first at the mission's start, the others later that day or days later.
    s_mission = np.repeat(np.arange(n_m), m_sessions)
    n_s = s_mission.size
    k = np.arange(n_s) - _offsets(m_sessions)[s_mission]
    same_day = rng.random(n_s) < _SAME_DAY_RETURN
    incr = np.where(k == 0, 0, np.where(same_day, 0, rng.geometric(_RETURN_DAYS_P, size=n_s)))
    s_day = m_day[s_mission] + np.cumsum(incr) - np.cumsum(incr)[_offsets(m_sessions)][s_mission]
    fresh = np.where(k == 0, m_start[s_mission], s_day * DAY_S + _hour_offsets(rng, n_s))
    anchor_flag = (k == 0) | ~same_day
    gap = np.where(anchor_flag, 0, 1200 + rng.exponential(5400.0, size=n_s)).astype(np.int64)
    cum_gap = np.cumsum(gap)
    anchor = np.maximum.accumulate(np.where(anchor_flag, np.arange(n_s), 0))
    s_time = fresh[anchor] + cum_gap - cum_gap[anchor]
    day_now = np.minimum(s_time // DAY_S, days - 1)
    s_person = m_person[s_mission]
    # Later sessions thin out as the person's activity fades; the platform follows today's usage.
    ratio = total[s_person, day_now] / total[s_person, m_day[s_mission]]
    keep = (s_time < days * DAY_S) & ((k == 0) | (rng.random(n_s) < ratio))
    weights = world.usage[s_person, :, day_now] * (
        1.0 + _HOME_STICKINESS * (np.arange(n_plat)[None, :] == m_home[s_mission][:, None]))
    s_plat = _pick(rng, weights)
    keep &= weights.sum(axis=1) > 0
    order = np.nonzero(keep)[0]
    order = order[np.lexsort((s_time[order], s_mission[order]))]
    s_mission, s_time, s_plat, s_person = s_mission[order], s_time[order], s_plat[order], s_person[order]
    n_s = s_mission.size
    s_id = log.sessions(s_person, s_plat, s_time)

    # Views: candidates again and again, otherwise exploration around the same need.
    gap_s = _spec_array("gap_s")
    s_views = np.where(rng.random(n_s) < _spec_array("bounce")[s_plat], 1,
                       1 + rng.poisson(_spec_array("views_per_session")[s_plat] - 1.0))
    v_sess = np.repeat(np.arange(n_s), s_views)
    n_v = v_sess.size
    v_mission, v_plat, v_person = s_mission[v_sess], s_plat[v_sess], s_person[v_sess]
    gaps = 2 + rng.exponential(gap_s[v_plat]).astype(np.int64)
    csum = np.cumsum(gaps)
    v_first = _offsets(s_views)
    v_time = s_time[v_sess] + csum - csum[v_first][v_sess]
    s_last_view = v_time[v_first + s_views - 1]
    is_cand = rng.random(n_v) < _CANDIDATE_VIEW
    v_cand = cand_first[v_mission] + (rng.random(n_v) ** _CANDIDATE_SKEW * n_cand[v_mission]).astype(np.int64)
    v_product = cand_product[v_cand]
    x = np.nonzero(~is_cand)[0]  # exploring views: the need's subcategory, its top category, other tastes
    top_first = np.searchsorted(tax.top, np.arange(len(tax.tops)))
    top_size = np.bincount(tax.top, minlength=len(tax.tops))
    x_sub = m_sub[v_mission[x]]
    u = rng.random(x.size)
    near = (u >= _EXPLORE[0]) & (u < _EXPLORE[0] + _EXPLORE[1])
    top = tax.top[x_sub[near]]
    x_sub[near] = top_first[top] + (rng.random(top.size) * top_size[top]).astype(np.int64)
    other = u >= _EXPLORE[0] + _EXPLORE[1]
    x_sub[other] = _sample_rows(rng, persons.pref_cum, v_person[x[other]])
    v_product[x] = _sample_near(rng, products, x_sub, m_target[v_mission[x]])
    v_item = world.of_product[v_plat, v_product]
    log.events(s_id[v_sess], v_time, v_item, VIEW)

    aff = persons.affinity[v_person, products.subcat[v_product]]
    sens = persons.price_sens[v_person]
    z = world.z_price[world.item_offset[v_plat] + v_item]
    p_cart = (_spec_array("cart_rate")[v_plat] * persons.cart_prop[v_person] * (0.3 + aff) * np.exp(-0.5 * sens * z)
              * np.where(is_cand, _CANDIDATE_CART, 1.0))
    is_cart = rng.random(n_v) < np.minimum(p_cart, 0.9)

    # The decision: does the mission buy, and which candidate (the more looked at, the likelier).
    n_cand_all = cand_product.size
    looks = np.bincount(v_cand[is_cand], minlength=n_cand_all)
    carted = np.bincount(v_cand[is_cand & is_cart], minlength=n_cand_all) > 0
    score = _LOOK_WEIGHT * np.log1p(looks) + np.log(np.where(carted, 3.0, 1.0)) + rng.gumbel(size=n_cand_all)
    chosen = np.lexsort((-score, cand_mission))[cand_first]
    m_choice = cand_product[chosen]
    m_aff = persons.affinity[m_person, m_sub]
    p_buy = (_MISSION_BUY * persons.buy_prop[m_person] * (0.35 + m_aff)
             * np.exp(-0.6 * persons.price_sens[m_person] * m_target))
    buys = rng.random(n_m) < np.minimum(p_buy, 0.9)
    # Nobody buys the same durable product twice: a later mission that chose it again does not buy.
    durable = np.nonzero(buys & ~np.isin(m_sub, [tax.codes.index(code) for code in CONSUMABLES]))[0]
    durable = durable[np.lexsort((m_start[durable], m_choice[durable], m_person[durable]))]
    again = (m_person[durable][1:] == m_person[durable][:-1]) & (m_choice[durable][1:] == m_choice[durable][:-1])
    buys[durable[1:][again]] = False

    # Carts of items not bought are abandoned; the shop's are sometimes removed again.
    v_bought = buys[v_mission] & (v_product == m_choice[v_mission])
    c_idx = np.nonzero(is_cart)[0]
    c_time = v_time[c_idx] + 5 + rng.exponential(20.0, size=c_idx.size).astype(np.int64)
    log.events(s_id[v_sess[c_idx]], c_time, v_item[c_idx], CART)
    removed = (rng.random(c_idx.size) < _spec_array("remove_rate")[v_plat[c_idx]]) & ~v_bought[c_idx]
    r_time = c_time[removed] + 10 + rng.exponential(60.0, size=int(removed.sum())).astype(np.int64)
    log.events(s_id[v_sess[c_idx[removed]]], r_time, v_item[c_idx[removed]], REMOVE)
    f_idx = np.nonzero(rng.random(n_v) < _spec_array("fav_rate")[v_plat] * (0.3 + aff)
                       * np.where(is_cand, 2.0, 1.0))[0]
    log.events(s_id[v_sess[f_idx]], v_time[f_idx] + 3 + rng.exponential(10.0, size=f_idx.size).astype(np.int64),
               v_item[f_idx], FAVORITE)
    d_idx = np.nonzero(rng.random(n_v) < _spec_array("direct_buy_rate")[v_plat] * persons.buy_prop[v_person])[0]
    log.events(s_id[v_sess[d_idx]], v_time[d_idx] + 30 + rng.exponential(60.0, size=d_idx.size).astype(np.int64),
               v_item[d_idx], PURCHASE)

    # The purchase: in the mission's last session, or moved to the person's cheapest other platform.
    is_last = np.append(s_mission[1:] != s_mission[:-1], True)
    last_of = np.full(n_m, -1, dtype=np.int64)
    last_of[s_mission[is_last]] = np.nonzero(is_last)[0]
    b = np.nonzero(buys & (last_of >= 0))[0]
    last = last_of[b]
    here = s_plat[last]
    product = m_choice[b]
    t_end = s_last_view[last]
    day_end = np.minimum(t_end // DAY_S, days - 1)
    cost = np.where((world.usage[m_person[b], :, day_end] > 0) & (np.arange(n_plat)[None, :] != here[:, None]),
                    world.price_on[:, product].T, np.inf)
    there = np.argmin(cost, axis=1)
    switch = np.isfinite(cost[np.arange(b.size), there]) & (rng.random(b.size) < _spec_array("switch_rate")[here])
    direct = rng.random(b.size) < _spec_array("no_cart_buy")[np.where(switch, there, here)]
    # Carted in an earlier visit than the purchase (else in the purchase session, or not at all: direct).
    later = ~switch & ~direct & (rng.random(b.size) >= _spec_array("same_session")[here])
    # The previous session of the same mission on the same platform: the visit where it was carted.
    by_plat = np.lexsort((s_time, s_plat, s_mission))
    prev = np.full(n_s, -1, dtype=np.int64)
    same = (s_mission[by_plat][1:] == s_mission[by_plat][:-1]) & (s_plat[by_plat][1:] == s_plat[by_plat][:-1])
    prev[by_plat[1:][same]] = by_plat[:-1][same]
    earlier = prev[last]
    item_here = world.of_product[here, product]
    # A return to a cart within the mission: carted in an earlier session, bought in the last one.
    e = np.nonzero(later & (earlier >= 0))[0]
    t_view = s_last_view[earlier[e]] + 2 + rng.exponential(gap_s[here[e]]).astype(np.int64)
    log.events(s_id[earlier[e]], t_view, item_here[e], VIEW)
    log.events(s_id[earlier[e]], t_view + 5 + rng.exponential(20.0, size=e.size).astype(np.int64), item_here[e], CART)
    # A cart left in the last session and bought in a return visit days later: view it, buy it.
    r = np.nonzero(later & (earlier < 0))[0]
    t_view = t_end[r] + 2 + rng.exponential(gap_s[here[r]]).astype(np.int64)
    log.events(s_id[last[r]], t_view, item_here[r], VIEW)
    log.events(s_id[last[r]], t_view + 5 + rng.exponential(20.0, size=r.size).astype(np.int64), item_here[r], CART)
    t_back = (t_end[r] // DAY_S + rng.geometric(_CART_RETURN_P, size=r.size)) * DAY_S + _hour_offsets(rng, r.size)
    r_id = log.sessions(m_person[b[r]], here[r], t_back)
    log.events(r_id, t_back, item_here[r], VIEW)
    log.events(r_id, t_back + 20 + rng.exponential(3 * gap_s[here[r]]).astype(np.int64), item_here[r], PURCHASE)
    # Bought in the mission's last session: view the item (again), cart it unless carted before or direct, buy.
    h = np.nonzero(~switch & ~(later & (earlier < 0)))[0]
    t_view = t_end[h] + 2 + rng.exponential(gap_s[here[h]]).astype(np.int64)
    t_cart = t_view + 5 + rng.exponential(20.0, size=h.size).astype(np.int64)
    log.events(s_id[last[h]], t_view, item_here[h], VIEW)
    fresh_cart = ~later[h] & ~direct[h]
    log.events(s_id[last[h][fresh_cart]], t_cart[fresh_cart], item_here[h][fresh_cart], CART)
    log.events(s_id[last[h]], t_cart + 20 + rng.exponential(3 * gap_s[here[h]]).astype(np.int64), item_here[h],
               PURCHASE)
    # Bought elsewhere: a short visit to the other platform straight to the item.
    w = np.nonzero(switch)[0]
    to = there[w]
    item_there = world.of_product[to, product[w]]
    t_start = t_end[w] + 300 + rng.exponential(3600.0, size=w.size).astype(np.int64)
    w_id = log.sessions(m_person[b[w]], to, t_start)
    t_cart = t_start + 5 + rng.exponential(20.0, size=w.size).astype(np.int64)
    log.events(w_id, t_start, item_there, VIEW)
    log.events(w_id[~direct[w]], t_cart[~direct[w]], item_there[~direct[w]], CART)
    log.events(w_id, t_cart + 20 + rng.exponential(3 * gap_s[to]).astype(np.int64), item_there, PURCHASE)


def _replenishment(rng: np.random.Generator, world: _World, log: _Log) -> None:
    """Regular buyers of a consumable repurchase their item on a personal cycle, in short sessions."""
    tax, persons, products, days = world.tax, world.persons, world.products, world.days
    cons = np.array([tax.codes.index(code) for code in CONSUMABLES], dtype=np.int64)
    median = np.array(list(CONSUMABLES.values()))
    p_regular = np.clip(_REGULAR[0] * persons.affinity[:, cons] - _REGULAR[1], 0.0, _REGULAR[2])
    regular = rng.random(p_regular.shape) < p_regular
    r_person, r_c = (a.astype(np.int64) for a in np.nonzero(regular))
    weights = world.usage[r_person].sum(axis=2)  # where the person shops most
    has = weights.sum(axis=1) > 0
    r_person, r_c, weights = r_person[has], r_c[has], weights[has]
    n_r = r_person.size
    if n_r == 0:
        return
    r_plat = _pick(rng, weights)
    r_sub = cons[r_c]
    level = persons.price_level[r_person] + rng.normal(0.0, 0.3, size=n_r)
    r_product = _sample_near(rng, products, r_sub, level)
    cycle = median[r_c] * rng.lognormal(0.0, _CYCLE_PERSON_SD, size=n_r)
    start, end = world.start[r_person, r_plat], world.end[r_person, r_plat]
    slots = int(np.ceil(days / (0.5 * cycle.min()))) + 1
    steps = cycle[:, None] * np.clip(1.0 + rng.normal(0.0, _CYCLE_JITTER, size=(n_r, slots)), 0.5, 1.5)
    steps[:, 0] = rng.random(n_r) * cycle  # the cycle runs already: the first purchase is due within one cycle
    due = start[:, None] + np.cumsum(steps, axis=1)
    fade = np.clip((end[:, None] - due) / persons.fade_days[r_person][:, None], 0.0, 1.0)
    ok = (due < np.minimum(end, days)[:, None]) & (rng.random(due.shape) < fade) & (rng.random(due.shape) >= _SKIP)
    same_item = rng.random(due.shape) < _SAME_ITEM
    row, col = np.nonzero(ok)
    n = row.size
    other = _sample_near(rng, products, r_sub[row], level[row])
    product = np.where(same_item[row, col], r_product[row], other)
    plat = r_plat[row]
    t_start = np.floor(due[row, col]).astype(np.int64) * DAY_S + _hour_offsets(rng, n)
    s_id = log.sessions(r_person[row], plat, t_start)
    gap_s = _spec_array("gap_s")
    extra = rng.poisson(_REPLENISH_VIEWS, size=n)
    item = world.of_product[plat, product]
    log.events(s_id, t_start, item, VIEW)
    x_sess = np.repeat(np.arange(n), extra)
    x_first = _offsets(extra)
    x_gap = 2 + rng.exponential(gap_s[plat[x_sess]]).astype(np.int64)
    x_cum = np.cumsum(x_gap)
    x_time = t_start[x_sess] + x_cum - np.concatenate([[0], x_cum])[x_first][x_sess]
    x_item = world.of_product[plat[x_sess], _sample_near(rng, products, r_sub[row][x_sess], level[row][x_sess])]
    log.events(s_id[x_sess], x_time, x_item, VIEW)
    t_last = t_start + np.bincount(x_sess, weights=x_gap, minlength=n).astype(np.int64)
    t_view = t_last + 2 + rng.exponential(gap_s[plat]).astype(np.int64)
    has_extra = extra > 0
    log.events(s_id[has_extra], t_view[has_extra], item[has_extra], VIEW)  # back to the usual item
    direct = rng.random(n) < _spec_array("no_cart_buy")[plat]
    t_cart = t_view + 5 + rng.exponential(20.0, size=n).astype(np.int64)
    log.events(s_id[~direct], t_cart[~direct], item[~direct], CART)
    log.events(s_id, t_cart + 20 + rng.exponential(3 * gap_s[plat]).astype(np.int64), item, PURCHASE)


def _unique_times(member: IntArray, time: IntArray, order_key: IntArray, end_day: FloatArray,
                  days: int) -> tuple[IntArray, IntArray]:
    """Sort by (member, time) and nudge times so they are strictly increasing per member.

    Unique times per account make every raw line distinct (two views of one item in one
    second would otherwise be identical taobao lines). Events at or after the account's
    churn moment or after the history's end are then dropped.

    :returns: the adjusted times of the kept events and the kept indices (into the inputs), in sorted order.
    """
    order = np.lexsort((order_key, time, member))
    m, t = member[order], time[order]
    i = np.arange(t.size, dtype=np.int64)
    big = 4 * (int(days) * DAY_S * 2 + t.size + 10)
    shifted = np.maximum.accumulate(t - i + m * big) - m * big + i
    limit = np.minimum(end_day[m] * DAY_S, float(days * DAY_S))
    ok = (shifted >= 0) & (shifted < limit)
    return shifted[ok], order[ok]


def _simulate_ads(rng: np.random.Generator, persons: _Persons, members: _Members, sessions: _Sessions,
                  adgroups: _AdGroups, days: int) -> _Ads:
    """Ad impressions during app sessions; clicks follow the person's affinity to the ad's category."""
    per_session = rng.poisson(1.0, size=sessions.member.size)
    s_idx = np.repeat(np.arange(sessions.member.size), per_session)
    member = sessions.member[s_idx]
    person = members.person[member]
    span = sessions.n_views[s_idx] * 40 + 60
    time = sessions.start[s_idx] + (rng.random(s_idx.size) * span).astype(np.int64)
    n = s_idx.size
    # 45% targeted at the person's tastes, the rest by ad-group weight.
    targeted = rng.random(n) < 0.45
    wanted = _sample_rows(rng, persons.pref_cum, person)
    by_cat = np.lexsort((np.arange(adgroups.subcat.size), adgroups.subcat))
    first = np.searchsorted(adgroups.subcat[by_cat], wanted)
    size = np.searchsorted(adgroups.subcat[by_cat], wanted, side="right") - first
    pick_targeted = by_cat[first + (rng.random(n) * size).astype(np.int64)]
    pick_random = rng.choice(adgroups.subcat.size, size=n, p=adgroups.weight / adgroups.weight.sum())
    adgroup = np.where(targeted, pick_targeted, pick_random).astype(np.int64)
    pid = (rng.random(n) < 0.4).astype(np.int64)
    aff = persons.affinity[person, adgroups.subcat[adgroup]]
    logit = -4.9 + 3.5 * aff + persons.click_bias[person] + 0.15 * (pid == 0) + rng.normal(0.0, 0.4, size=n)
    clk = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    time, keep = _unique_times(member, time, np.zeros(n, dtype=np.int64), members.end_day, days)
    return _Ads(member=member[keep], time=time, adgroup=adgroup[keep], pid=pid[keep], clk=clk[keep])


# ---------------------------------------------------------------------------- raw lines


def _epoch(day: date) -> int:
    """Unix seconds of ``day`` 00:00 UTC."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _rees46_time(base: np.datetime64, seconds: IntArray) -> list[str]:
    stamps = np.datetime_as_string(base + seconds.astype("timedelta64[s]"), unit="s")
    return [f"{s[:10]} {s[11:]} UTC" for s in stamps.tolist()]


def _session_uuids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.bytes(16 * n).hex()
    out = []
    for i in range(n):
        h = raw[32 * i:32 * i + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}")
    return out


def _event_lines(rng: np.random.Generator, spec: _PlatformSpec, members: _Members, catalog: _Catalog,
                 tax: _Taxonomy, ev: _Events, start_date: date) -> list[str]:
    """Valid raw lines of one platform, sorted by time (ties by account)."""
    order = np.lexsort((ev.member, ev.time))
    time, member, item, kind = ev.time[order], ev.member[order], ev.item[order], ev.kind[order]
    base_ts = _epoch(start_date)
    names = [spec.kinds.get(k, "") for k in range(5)]
    users = members.user_id[member].tolist()
    kinds = [names[k] for k in kind.tolist()]
    if spec.format == "rees46":
        item_part = [f"{iid},{catalog.category_id[c]},{tax.codes[c]},{b},{p:.2f}" for iid, c, b, p in
                     zip(catalog.item_id.tolist(), catalog.subcat.tolist(), catalog.brand, catalog.price.tolist(),
                         strict=True)]
        uuids = _session_uuids(rng, int(ev.session.max()) + 1 if ev.session.size else 0)
        sess = ev.session[order].tolist()
        stamps = _rees46_time(np.datetime64(start_date.isoformat(), "s"), time)
        return [f"{t},{k},{item_part[i]},{u},{uuids[s]}"
                for t, k, i, u, s in zip(stamps, kinds, item.tolist(), users, sess, strict=True)]
    if spec.format == "taobao":
        item_part = [f"{iid},{catalog.category_id[c]}" for iid, c in
                     zip(catalog.item_id.tolist(), catalog.subcat.tolist(), strict=True)]
        return [f"{u},{item_part[i]},{k},{t}" for u, i, k, t in
                zip(users, item.tolist(), kinds, (time + base_ts).tolist(), strict=True)]
    millis = (time + base_ts) * 1000 + rng.integers(0, 1000, size=time.size)
    txn = np.full(time.size, -1, dtype=np.int64)
    is_buy = kind == PURCHASE
    txn[is_buy] = np.arange(int(is_buy.sum())) + int(rng.integers(0, 1000))
    ids = catalog.item_id.tolist()
    return [f"{ms},{u},{k},{ids[i]},{'' if x < 0 else x}" for ms, u, k, i, x in
            zip(millis.tolist(), users, kinds, item.tolist(), txn.tolist(), strict=True)]


def _ads_lines(members: _Members, ads: _Ads, adgroups: _AdGroups, start_date: date) -> list[str]:
    order = np.lexsort((ads.member, ads.time))
    base_ts = _epoch(start_date)
    users = members.user_id[ads.member[order]].tolist()
    groups = adgroups.adgroup_id[ads.adgroup[order]].tolist()
    times = (ads.time[order] + base_ts).tolist()
    return [f"{u},{t},{g},{_ADS_PIDS[p]},{1 - c},{c}" for u, t, g, p, c in
            zip(users, times, groups, ads.pid[order].tolist(), ads.clk[order].tolist(), strict=True)]


# ---------------------------------------------------------------------------- dirt


# Makes a bad line from a valid line's fields.
Corruptor = Callable[[list[str], np.random.Generator], list[str]]


def _set(idx: int, values: Sequence[str]) -> Corruptor:
    def corrupt(fields: list[str], rng: np.random.Generator) -> list[str]:
        out = list(fields)
        out[idx] = values[int(rng.integers(len(values)))]
        return out
    return corrupt


def _extra_field(fields: list[str], rng: np.random.Generator) -> list[str]:
    return [*fields, ["x", "1", "extra"][int(rng.integers(3))]]


def _drop_field(idx: int) -> Corruptor:
    def corrupt(fields: list[str], rng: np.random.Generator) -> list[str]:
        return fields[:idx] + fields[idx + 1:]
    return corrupt


def _negate(idx: int) -> Corruptor:
    def corrupt(fields: list[str], rng: np.random.Generator) -> list[str]:
        out = list(fields)
        out[idx] = f"-{out[idx]}"
        return out
    return corrupt


_BAD_UNIX = ("abc", "not-a-time", "1735x00000", "2026-01-05")
_BAD_KINDS = ("click", "zoom", "VIEW?")

#: Bad-row kinds planted in each raw format (see the module docstring).
BAD_ROW_KINDS: dict[str, dict[str, Corruptor]] = {
    "rees46": {
        "bad_timestamp": _set(0, ("not-a-date", "2026-13-45 25:61:00 UTC", "N/A")),
        "missing_timestamp": _set(0, ("",)),
        "missing_user": _set(7, ("",)),
        "unknown_event_type": _set(1, _BAD_KINDS),
        "negative_price": _negate(6),
        "extra_field": _extra_field,
        "missing_field": _drop_field(3),
    },
    "taobao": {
        "bad_timestamp": _set(4, _BAD_UNIX),
        "missing_timestamp": _set(4, ("",)),
        "missing_user": _set(0, ("",)),
        "unknown_event_type": _set(3, _BAD_KINDS),
        "extra_field": _extra_field,
        "missing_field": _drop_field(2),
    },
    "retailrocket": {
        "bad_timestamp": _set(0, _BAD_UNIX),
        "missing_timestamp": _set(0, ("",)),
        "missing_user": _set(1, ("",)),
        "unknown_event_type": _set(2, _BAD_KINDS),
        "extra_field": _extra_field,
        "missing_field": _drop_field(3),
    },
    "taobao_ads": {
        "bad_timestamp": _set(1, _BAD_UNIX),
        "missing_timestamp": _set(1, ("",)),
        "missing_user": _set(0, ("",)),
        "bad_clk": _set(5, ("2", "-1", "yes")),
        "extra_field": _extra_field,
        "missing_field": _drop_field(3),
    },
}


def _plant_dirt(rng: np.random.Generator, lines: list[str], fmt: str) -> tuple[list[str], dict[str, int]]:
    """Insert bad lines and exact duplicates into a feed's valid, distinct lines.

    Bad lines sit next to the line they were made from; each bad line is distinct. A
    duplicated line gets one extra copy (sometimes two), right after it or anywhere in the feed.

    :returns: the final lines in write order and their counts.
    """
    n = len(lines)
    if len(set(lines)) != n:
        raise RuntimeError(f"{fmt}: generated valid lines are not distinct; the counts would be wrong")
    if n == 0:
        return [], {"rows": 0, "bad_rows": 0, "duplicate_rows": 0, "valid_distinct_rows": 0}
    makers = BAD_ROW_KINDS[fmt]
    kinds = list(makers)
    n_bad = max(len(kinds), round(n * rng.uniform(0.005, 0.01)))
    n_dup = max(2, round(n * rng.uniform(0.005, 0.01)))
    bad: list[str] = []
    bad_src: list[int] = []
    seen: set[str] = set()
    kind_of = rng.permutation(np.arange(n_bad) % len(kinds))
    for _ in range(100 * n_bad):
        if len(bad) == n_bad:
            break
        src = int(rng.integers(n))
        line = ",".join(makers[kinds[kind_of[len(bad)]]](lines[src].split(","), rng))
        if line not in seen:
            seen.add(line)
            bad.append(line)
            bad_src.append(src)
    dup_src = rng.choice(n, size=min(n_dup, n), replace=False)
    copies = np.where(rng.random(dup_src.size) < 0.1, 2, 1)
    dup_idx = np.repeat(dup_src, copies)
    adjacent = rng.random(dup_idx.size) < 0.5
    dup_key = np.where(adjacent, dup_idx + 0.5, rng.random(dup_idx.size) * n)
    keys = np.concatenate([np.arange(n, dtype=np.float64), np.array(bad_src) + 0.25, dup_key])
    everything = lines + bad + [lines[i] for i in dup_idx.tolist()]
    order = np.lexsort((np.arange(len(everything)), keys))
    out = [everything[i] for i in order.tolist()]
    counts = {"rows": len(out), "bad_rows": len(bad), "duplicate_rows": int(dup_idx.size), "valid_distinct_rows": n}
    return out, counts


# ---------------------------------------------------------------------------- files


def _write_lines(path: Path, header: str | None, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        if header is not None:
            f.write(header + "\n")
        f.write("".join(line + "\n" for line in lines))


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return len(rows)


def _clean(rows: int) -> dict[str, int]:
    return {"rows": rows, "bad_rows": 0, "duplicate_rows": 0, "valid_distinct_rows": rows}


def _write_all(out: Path, rng: np.random.Generator, tax: _Taxonomy, member_sets: dict[str, _Members],
               catalogs: dict[str, _Catalog], events: dict[str, _Events], ads: _Ads, adgroups: _AdGroups,
               start_date: date, days: int) -> dict[str, dict[str, int]]:
    """Write every feed, catalog and the identity file; return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    for old in (out / "shop").glob("events-*.csv"):
        old.unlink()
    manifest: dict[str, dict[str, int]] = {}
    headers = {"rees46": "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session",
               "taobao": None, "retailrocket": "timestamp,visitorid,event,itemid,transactionid"}
    for spec in _PLATFORMS:
        valid = _event_lines(rng, spec, member_sets[spec.name], catalogs[spec.name], tax, events[spec.name],
                             start_date)
        lines, manifest[spec.name] = _plant_dirt(rng, valid, spec.format)
        if spec.format == "rees46":
            n_files = 3
            bounds = [round(i * len(lines) / n_files) for i in range(n_files + 1)]
            for i in range(n_files):
                _write_lines(out / spec.name / f"events-{i:03d}.csv", headers[spec.format],
                             lines[bounds[i]:bounds[i + 1]])
        else:
            _write_lines(out / spec.name / "events.csv", headers[spec.format], lines)
        cat = catalogs[spec.name]
        rows = [[str(cat.item_id[i]), cat.title[i], tax.codes[cat.subcat[i]], cat.brand[i], f"{cat.price[i]:.2f}"]
                for i in np.argsort(cat.item_id).tolist()]
        manifest[f"{spec.name}_items"] = _clean(_write_csv(out / spec.name / "items.csv",
                                                           ["item_id", "title", "category", "brand", "price"], rows))
    app_cat = catalogs["app"].category_id
    _write_csv(out / "app" / "categories.csv", ["category_id", "category_code"],
               [[str(app_cat[c]), code] for c, code in enumerate(tax.codes)])
    ad_lines, manifest["app_ads"] = _plant_dirt(rng, _ads_lines(member_sets["app"], ads, adgroups, start_date),
                                                "taobao_ads")
    _write_lines(out / "app" / "ads.csv", "user,time_stamp,adgroup_id,pid,nonclk,clk", ad_lines)
    feature_rows = [[str(g), str(app_cat[c]), str(cp), str(cu), b, f"{p:.2f}"] for g, c, cp, cu, b, p in
                    zip(adgroups.adgroup_id.tolist(), adgroups.subcat.tolist(), adgroups.campaign_id.tolist(),
                        adgroups.customer.tolist(), adgroups.brand, adgroups.price.tolist(), strict=True)]
    manifest["app_ad_feature"] = _clean(_write_csv(
        out / "app" / "ad_feature.csv", ["adgroup_id", "cate_id", "campaign_id", "customer", "brand", "price"],
        feature_rows))
    manifest["identity"] = _clean(_write_identity(out / "identity.csv", rng, member_sets, events, ads))
    return manifest


def _write_identity(path: Path, rng: np.random.Generator, member_sets: dict[str, _Members],
                    events: dict[str, _Events], ads: _Ads) -> int:
    """Link about 70% of the accounts that appear in the feeds to the person's global id ``c0000123``."""
    rows: list[tuple[int, str, int]] = []
    for spec in _PLATFORMS:
        members = member_sets[spec.name]
        seen = np.zeros(members.person.size, dtype=bool)
        seen[events[spec.name].member] = True
        if spec.name == "app":
            seen[ads.member] = True
        linked = np.nonzero(seen & (rng.random(seen.size) < 0.7))[0]
        rows.extend((int(members.person[m]), spec.name, int(members.user_id[m])) for m in linked.tolist())
    rows.sort()
    return _write_csv(path, ["platform", "platform_user_id", "user_id"],
                      [[platform, str(uid), f"c{person + 1:07d}"] for person, platform, uid in rows])


def _write_config(out: Path) -> Path:
    """Write ``propensity.yml``: the platforms, ads and identity keys with absolute paths."""
    def q(path: Path | str) -> str:
        return json.dumps(str(path))  # a JSON string is a valid double-quoted YAML scalar

    text = (
        "# Written by `propensity generate`: overlay this on conf/base.yml to ingest the synthetic feeds.\n"
        "platforms:\n"
        f"  - {{name: shop, format: rees46, events: {q(out / 'shop' / 'events-*.csv')}, "
        f"items: {q(out / 'shop' / 'items.csv')}}}\n"
        f"  - {{name: app, format: taobao, events: {q(out / 'app' / 'events.csv')}, "
        f"items: {q(out / 'app' / 'items.csv')}}}\n"
        f"  - {{name: market, format: retailrocket, events: {q(out / 'market' / 'events.csv')}, "
        f"items: {q(out / 'market' / 'items.csv')}}}\n"
        "ads:\n"
        f"  - {{platform: app, format: taobao_ads, path: {q(out / 'app' / 'ads.csv')}, "
        f"ad_feature: {q(out / 'app' / 'ad_feature.csv')}}}\n"
        f"identity: {q(out / 'identity.csv')}\n"
    )
    path = out / "propensity.yml"
    path.write_text(text, encoding="utf-8")
    return path
