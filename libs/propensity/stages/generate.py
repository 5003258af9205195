"""Synthetic multi-platform e-commerce world, written as raw CSV feeds in public formats.

The world is a set of *persons* with latent tastes and habits. Each person uses one to
three platforms (``shop``, ``app``, ``market``) under a different user id on each, and
each platform has its own catalog over one shared category taxonomy. Behaviour is
simulated day by day:

- **sessions**: per (person, platform, day) a Poisson number of sessions whose rate is the
  person's activity times a platform multiplier, a weekend bump, and a *fade* that drops
  the activity linearly to zero over one to two weeks before the person's churn moment;
  after churn there are no events at all. About 40% of persons churn inside the history
  (the same day on all their platforms); some accounts also churn on one platform only.
- **views** mostly in the person's preferred (Dirichlet) categories, around one focus
  category per session; items within a category follow a Zipf popularity.
- **carts** with a probability that grows with the category affinity and falls with the
  item's price for price-sensitive persons; carts are removed sometimes (shop), favourites
  happen on the app; carted items convert to **purchases** in the same session or a few
  days later (a return visit: view, then purchase), less often for pricey items.
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

__all__ = ["BAD_ROW_KINDS", "TAXONOMY", "GeneratedFeeds", "generate_feeds"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

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
}

# Event kinds inside the simulation.
VIEW, CART, REMOVE, FAVORITE, PURCHASE = 0, 1, 2, 3, 4

# Share of sessions starting in each UTC hour (quiet nights, evening peak).
_HOURS = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 4, 4, 4, 4, 4, 4.2, 4.5, 5, 5.5, 6, 6, 5, 3.5, 2])
_HOUR_P = _HOURS / _HOURS.sum()

_ADS_PIDS = ("430548_1007", "430539_1007")


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
    views_per_session: float
    gap_s: float  # mean seconds between events in a session
    cart_rate: float  # per view, before affinity and price effects
    remove_rate: float  # share of carts removed again
    fav_rate: float  # per view
    buy_rate: float  # per kept cart
    same_session: float  # share of converting carts bought in the same session
    direct_buy_rate: float  # per view, purchase without a cart
    items_per_user: float  # catalog size relative to the number of persons
    id_low: int  # platform user ids are drawn from [id_low, id_high)
    id_high: int
    item_low: int
    item_high: int
    kinds: dict[int, str]  # simulation kind -> raw event name


_PLATFORMS: tuple[_PlatformSpec, ...] = (
    _PlatformSpec("shop", "rees46", 0.45, 0.65, 5.5, 60.0, 0.06, 0.25, 0.0, 0.42, 0.5, 0.0, 1.0,
                  500_000_000, 600_000_000, 1_000_000, 60_000_000,
                  {VIEW: "view", CART: "cart", REMOVE: "remove_from_cart", PURCHASE: "purchase"}),
    _PlatformSpec("app", "taobao", 0.35, 1.00, 4.0, 35.0, 0.04, 0.0, 0.03, 0.35, 0.4, 0.003, 1.2,
                  1, 1_018_012, 1, 5_163_071,
                  {VIEW: "pv", CART: "cart", FAVORITE: "fav", PURCHASE: "buy"}),
    _PlatformSpec("market", "retailrocket", 0.25, 0.60, 4.0, 70.0, 0.05, 0.0, 0.0, 0.40, 0.6, 0.002, 0.8,
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
class _Catalog:
    item_id: IntArray
    subcat: IntArray  # sorted ascending
    brand: list[str]
    price: FloatArray
    z_price: FloatArray  # standardised log price within the subcategory
    keys: FloatArray  # subcat + cumulative popularity inside the subcategory, for sampling
    category_id: IntArray  # the platform's category id per subcategory
    title: list[str]


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
    catalogs = {spec.name: _make_catalog(streams[3 + i], tax, spec, users) for i, spec in enumerate(_PLATFORMS)}
    weekday = start_date.weekday()
    events: dict[str, _Events] = {}
    sessions: dict[str, _Sessions] = {}
    for i, spec in enumerate(_PLATFORMS):
        rng = streams[6 + i]
        sess = _simulate_sessions(rng, persons, member_sets[spec.name], spec, days, weekday)
        events[spec.name] = _simulate_events(rng, persons, member_sets[spec.name], catalogs[spec.name], spec,
                                             sess, days)
        sessions[spec.name] = sess
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
    top_pref = rng.dirichlet(np.full(n_top, 0.3), size=n)
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
    return _Persons(
        pref=pref, pref_cum=pref_cum, affinity=pref / pref.max(axis=1, keepdims=True),
        activity=rng.lognormal(-0.245, 0.7, size=n), price_sens=1.5 * rng.beta(2.0, 2.0, size=n),
        cart_prop=rng.lognormal(-0.08, 0.4, size=n), buy_prop=rng.lognormal(-0.125, 0.5, size=n),
        click_bias=rng.normal(0.0, 0.5, size=n), join_day=join, churn_day=churn_day,
        fade_days=rng.uniform(7.0, 15.0, size=n),
    )


def _make_members(rng: np.random.Generator, persons: _Persons, days: int) -> dict[str, _Members]:
    """Give each person one to three platforms (~40% two or more) and an account on each."""
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
        join = persons.join_day[person]
        late = rng.random(m) < 0.15
        start = np.where(late, np.floor(join + rng.random(m) * (days - join)), join)
        span = days - start - 5.0
        own_churn = (rng.random(m) < 0.12) & (span > 0)
        plat_churn = np.where(own_churn, start + 5.0 + rng.random(m) * np.maximum(span, 0.0), np.inf)
        user_id = rng.choice(spec.id_high - spec.id_low, size=m, replace=False).astype(np.int64) + spec.id_low
        out[spec.name] = _Members(person=person, user_id=user_id, mult=rng.lognormal(-0.1, 0.45, size=m),
                                  start_day=start, end_day=np.minimum(persons.churn_day[person], plat_churn))
    return out


def _make_catalog(rng: np.random.Generator, tax: _Taxonomy, spec: _PlatformSpec, users: int) -> _Catalog:
    """One platform's items: every subcategory has some, log-normal prices, Zipf popularity."""
    n_sub = len(tax.codes)
    n = int(min(max(300, users * spec.items_per_user), spec.item_high - spec.item_low, 60_000))
    weights = tax.popularity * 0.5 + 0.5 / n_sub
    subcat = np.sort(np.concatenate([np.arange(n_sub), rng.choice(n_sub, size=n - n_sub, p=weights)]))
    subcat = subcat.astype(np.int64)
    z = rng.normal(size=n)
    price = np.round(np.maximum(np.exp(tax.log_mu[subcat] + tax.log_sigma[subcat] * z), 1.0), 2)
    z_price = (np.log(price) - tax.log_mu[subcat]) / tax.log_sigma[subcat]
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
    item_id = rng.choice(spec.item_high - spec.item_low, size=n, replace=False).astype(np.int64) + spec.item_low
    if spec.format == "rees46":
        category_id = rng.choice(10**17, size=n_sub, replace=False).astype(np.int64) + 2_053_013_552_000_000_000
    else:
        category_id = rng.choice(5_162_429, size=n_sub, replace=False).astype(np.int64) + 1
    brand: list[str] = []
    title: list[str] = []
    for c, model in zip(subcat.tolist(), rng.integers(10, 999, size=n).tolist(), strict=True):
        names = BRANDS[tax.tops[int(tax.top[c])]]
        b = names[min(int(rng.zipf(1.6)) - 1, len(names) - 1)]
        if spec.format == "rees46" and rng.random() < 0.05:
            b = ""  # rees46 rows often lack a brand
        brand.append(b)
        sub = tax.codes[c].split(".", 1)[1]
        title.append(f"{b.title()} {sub} {chr(65 + model % 26)}{model}".strip())
    return _Catalog(item_id=item_id, subcat=subcat, brand=brand, price=price, z_price=z_price,
                    keys=subcat + within, category_id=category_id, title=title)


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


def _simulate_sessions(rng: np.random.Generator, persons: _Persons, members: _Members, spec: _PlatformSpec,
                       days: int, weekday: int) -> _Sessions:
    """Poisson sessions per (account, day), fading before churn; start times follow a daily rhythm."""
    day = np.arange(days, dtype=np.float64)
    person = members.person
    fade = np.clip((members.end_day[:, None] - day[None, :]) / persons.fade_days[person][:, None], 0.0, 1.0)
    active = day[None, :] >= members.start_day[:, None]
    dow = np.where((weekday + np.arange(days)) % 7 >= 5, 1.15, 1.0)
    rate = (spec.session_rate * persons.activity[person] * members.mult)[:, None] * fade * dow[None, :] * active
    counts = rng.poisson(rate)
    m_idx, d_idx = np.nonzero(counts)
    reps = counts[m_idx, d_idx]
    member = np.repeat(m_idx, reps).astype(np.int64)
    d = np.repeat(d_idx, reps).astype(np.int64)
    start = d * DAY_S + rng.choice(24, size=member.size, p=_HOUR_P) * 3600 + rng.integers(0, 3600, size=member.size)
    order = np.lexsort((start, member))
    n_views = 1 + rng.poisson(spec.views_per_session - 1.0, size=member.size)
    return _Sessions(member=member[order], start=start[order].astype(np.int64), n_views=n_views.astype(np.int64))


def _sample_rows(rng: np.random.Generator, cum: FloatArray, rows: IntArray) -> IntArray:
    """For each entry of ``rows``, draw a column index from that row's cumulative distribution."""
    u = rng.random(rows.size)
    out = np.empty(rows.size, dtype=np.int64)
    step = 200_000
    for lo in range(0, rows.size, step):
        hi = min(lo + step, rows.size)
        out[lo:hi] = (cum[rows[lo:hi]] < u[lo:hi, None]).sum(axis=1)
    return np.minimum(out, cum.shape[1] - 1)


def _sample_items(rng: np.random.Generator, catalog: _Catalog, subcat: IntArray) -> IntArray:
    """Draw an item of the given subcategory by its popularity."""
    idx = np.searchsorted(catalog.keys, subcat + rng.random(subcat.size), side="right")
    return np.minimum(idx, catalog.keys.size - 1).astype(np.int64)


def _simulate_events(rng: np.random.Generator, persons: _Persons, members: _Members, catalog: _Catalog,
                     spec: _PlatformSpec, sessions: _Sessions, days: int) -> _Events:
    """Views, carts, removals, favourites and purchases of one platform, cut at churn and at the end."""
    n_sess = sessions.member.size
    if n_sess == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Events(member=empty, time=empty, item=empty, kind=empty, session=empty)
    n_views = sessions.n_views
    v_sess = np.repeat(np.arange(n_sess), n_views).astype(np.int64)
    v_member = sessions.member[v_sess]
    v_person = members.person[v_member]
    gaps = 2 + rng.exponential(spec.gap_s, size=v_sess.size).astype(np.int64)
    csum = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(n_views)[:-1]]).astype(np.int64)
    v_time = sessions.start[v_sess] + csum - csum[first][v_sess]
    focus = _sample_rows(rng, persons.pref_cum, members.person[sessions.member])
    own = _sample_rows(rng, persons.pref_cum, v_person)
    v_cat = np.where(rng.random(v_sess.size) < 0.6, focus[v_sess], own)
    v_item = _sample_items(rng, catalog, v_cat)

    aff = persons.affinity[v_person, v_cat]
    sens = persons.price_sens[v_person]
    z = catalog.z_price[v_item]
    p_cart = spec.cart_rate * persons.cart_prop[v_person] * (0.3 + aff) * np.exp(-0.5 * sens * z)
    is_cart = rng.random(v_sess.size) < np.minimum(p_cart, 0.9)
    c_idx = np.nonzero(is_cart)[0]
    c_time = v_time[c_idx] + 5 + rng.exponential(20.0, size=c_idx.size).astype(np.int64)
    removed = rng.random(c_idx.size) < spec.remove_rate
    r_idx = c_idx[removed]
    r_time = c_time[removed] + 10 + rng.exponential(60.0, size=r_idx.size).astype(np.int64)

    kept, k_time = c_idx[~removed], c_time[~removed]
    p_buy = spec.buy_rate * persons.buy_prop[v_person[kept]] * np.exp(-0.8 * sens[kept] * z[kept])
    buys = rng.random(kept.size) < np.minimum(p_buy, 0.95)
    b_idx, b_time = kept[buys], k_time[buys]
    same = rng.random(b_idx.size) < spec.same_session
    # Same session: a little later. Otherwise a return visit one or more days later: view, then purchase.
    delay = rng.geometric(0.35, size=b_idx.size)
    later_day = b_time // DAY_S + delay
    later = later_day * DAY_S + rng.choice(24, size=b_idx.size, p=_HOUR_P) * 3600 + rng.integers(0, 3600, b_idx.size)
    p_time = np.where(same, b_time + 20 + rng.exponential(3 * spec.gap_s, size=b_idx.size).astype(np.int64), later)
    ret = np.nonzero(~same)[0]
    ret_session = n_sess + np.arange(ret.size, dtype=np.int64)
    p_session = v_sess[b_idx].copy()
    p_session[ret] = ret_session
    rv_time = p_time[ret] - 30 - rng.exponential(60.0, size=ret.size).astype(np.int64)

    f_idx = np.nonzero(rng.random(v_sess.size) < spec.fav_rate * (0.3 + aff))[0]
    f_time = v_time[f_idx] + 3 + rng.exponential(10.0, size=f_idx.size).astype(np.int64)
    d_idx = np.nonzero(rng.random(v_sess.size) < spec.direct_buy_rate * persons.buy_prop[v_person])[0]
    d_time = v_time[d_idx] + 30 + rng.exponential(60.0, size=d_idx.size).astype(np.int64)

    parts = [  # (view index, time, kind, session)
        (np.arange(v_sess.size), v_time, VIEW, v_sess),
        (c_idx, c_time, CART, v_sess[c_idx]),
        (r_idx, r_time, REMOVE, v_sess[r_idx]),
        (b_idx, p_time, PURCHASE, p_session),
        (b_idx[ret], rv_time, VIEW, ret_session),
        (f_idx, f_time, FAVORITE, v_sess[f_idx]),
        (d_idx, d_time, PURCHASE, v_sess[d_idx]),
    ]
    src = np.concatenate([p[0] for p in parts]).astype(np.int64)
    time = np.concatenate([p[1] for p in parts]).astype(np.int64)
    kind = np.concatenate([np.full(p[0].size, p[2], dtype=np.int64) for p in parts])
    session = np.concatenate([p[3] for p in parts]).astype(np.int64)
    member = v_member[src]
    time, keep = _unique_times(member, time, kind, members.end_day, days)
    return _Events(member=member[keep], time=time, item=v_item[src][keep], kind=kind[keep], session=session[keep])


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
