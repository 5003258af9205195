"""Raw feed formats: columns, validation rules and the mapping of each to events.

# Raw formats

Each platform's feed is CSV in the format of a public dataset (globs allowed: `/data/shop/*.csv`).

| format | event time | event types |
|---|---|---|
| `rees46` | `2026-01-05 13:04:11 UTC` | view, cart, remove_from_cart, purchase |
| `taobao` (no header) | unix seconds | pv -> view, cart, fav -> favorite, buy -> purchase |
| `retailrocket` | unix milliseconds | view, addtocart -> cart, transaction -> purchase |
| `taobao_ads` | unix seconds | one row = one `ad_impression`; `clk=1` also an `ad_click` at the same time |

Side files: an item catalog per platform (`item_id,title,category,brand,price`, header), an
`ad_feature` file per ad feed (`adgroup_id,cate_id,campaign_id,customer,brand,price`) and one
identity file (`platform,platform_user_id,user_id`: known cross-platform links).

Rules of `propensity ingest`:

- A record that cannot be parsed or breaks a rule goes to `rejects` with its raw text and a reason;
  nothing is dropped silently. The rules: bytes that are not valid UTF-8 (the raw text shows
  them as `\\xNN`), an unterminated quoted field, a wrong column count, a missing user or item,
  a missing or bad timestamp, a timestamp before `ingest.earliest_event_date` or later than its
  file's modification time plus `ingest.future_tolerance_hours`, an unknown event type, a price
  that is not a number, negative, or above `ingest.max_price` (`1e309` is infinite, so above it),
  `clk` not 0/1, conflicting identity links.
- A quoted field may hold commas and line breaks (RFC 4180): such a record is one read, one event
  or one reject. A quote left open for more than 100 lines, or to the end of the file, makes its
  first line a reject and reading resumes on the next line.
- `.gz` and `.bz2` files are decompressed by their extension, headers included, in every format.
- Exact duplicate raw rows collapse to one event (a deterministic `event_id` and a Delta MERGE);
  re-ingesting the same files adds nothing (files already read are skipped unless
  `ingest.reprocess` is set).
- Per feed `read = accepted + duplicates + rejected`, printed and kept in `ingest_runs`; a run
  killed at any point and run again gives the same tables and the same accounting.
- A user without a link in the identity file gets `user_id = "<platform>:<platform_user_id>"`;
  when a link arrives later, `identity_map` and the existing events follow it.
- A missing file, an unknown format or a header without a required column stops the run with one
  line on stderr before any table is touched.

Each format turns a DataFrame of raw string fields (named as in the public dataset) into
candidate events plus ``_reject_reason`` (NULL for a valid row). Rules are Spark column
expressions, so validation runs in the JVM without Python row functions; the first broken
rule names the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

from propensity.core.config import IngestConfig

EVENT_COLUMNS = ("platform_user_id", "event_time", "event_type", "item_id", "category_code", "category_ref",
                 "brand", "price", "session_id", "campaign_id")


@dataclass(frozen=True)
class FeedFormat:
    """A raw CSV format: its columns, whether files start with a header, and its mapping."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    has_header: bool
    to_events: Callable[[IngestConfig], dict[str, Column]]


def _blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def _first_reason(first: tuple[Column, Column | str], *rules: tuple[Column, Column | str]) -> Column:
    """CASE WHEN rule1 THEN reason1 WHEN ... END: the first broken rule wins."""

    def reason(value: Column | str) -> Column:
        return F.lit(value) if isinstance(value, str) else value

    expr = F.when(first[0], reason(first[1]))
    for broken, value in rules:
        expr = expr.when(broken, reason(value))
    return expr


def _epoch(c: Column, scale: int) -> Column:
    """Unix seconds (scale 1) or milliseconds (scale 1000) as a timestamp; NULL if not an integer."""
    digits = F.when(F.trim(c).rlike(r"^-?[0-9]{1,16}$"), F.trim(c).cast("long"))
    return F.timestamp_micros(digits * F.lit(1_000_000 // scale))


def _time_rules(raw: Column, parsed: Column, limits: IngestConfig) -> list[tuple[Column, Column | str]]:
    """Timestamps must parse, not precede the earliest date, and not follow their file's writing.

    An event cannot come from the future of the file that records it: its time may exceed the
    file's modification time (``_file_modified_at``) by the tolerance only.
    """
    tolerance = int(limits.future_tolerance_hours * 3_600_000_000)
    return [
        (_blank(raw), "missing timestamp"),
        (parsed.isNull(), F.concat(F.lit("bad timestamp '"), raw, F.lit("'"))),
        (parsed < F.lit(limits.earliest_event_date).cast("timestamp"),
         F.concat(F.lit(f"timestamp before ingest.earliest_event_date {limits.earliest_event_date} '"), raw,
                  F.lit("'"))),
        (F.unix_micros(parsed) > F.unix_micros(F.col("_file_modified_at")) + F.lit(tolerance),
         F.concat(F.lit("timestamp later than its file's modification time"
                        f" + {limits.future_tolerance_hours:g}h '"), raw, F.lit("'"))),
    ]


def _mapped_type(raw: Column, mapping: dict[str, str]) -> Column:
    """The event type a raw type maps to; NULL for an unknown one."""
    (source, target), *rest = mapping.items()
    expr = F.when(raw == source, target)
    for source, target in rest:
        expr = expr.when(raw == source, target)
    return expr


def _price_rules(raw: Column, price: Column, limits: IngestConfig) -> list[tuple[Column, Column | str]]:
    return [
        (~_blank(raw) & price.isNull(), F.concat(F.lit("bad price '"), raw, F.lit("'"))),
        (price < 0, F.concat(F.lit("negative price '"), raw, F.lit("'"))),
        (price > limits.max_price, F.concat(F.lit(f"price above ingest.max_price {limits.max_price:g} '"), raw,
                                            F.lit("'"))),
    ]


def _to_double(raw: Column) -> Column:
    trimmed = F.trim(raw)
    return F.when(trimmed.rlike(r"^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$"), trimmed.cast("double"))


def _unknown_type(raw: Column, mapped: Column) -> tuple[Column, Column]:
    return (mapped.isNull(), F.concat(F.lit("unknown event type '"), F.coalesce(raw, F.lit("")), F.lit("'")))


def _nullify(c: Column) -> Column:
    return F.when(~_blank(c), F.trim(c))


def _event(user: str, time: Column, etype: Column, item: str, reason: Column, *, category_code: Column | None = None,
           category_ref: Column | None = None, brand: Column | None = None, price: Column | None = None,
           session_id: Column | None = None) -> dict[str, Column]:
    def text(c: Column | None) -> Column:
        return F.lit(None).cast("string") if c is None else c

    return {"platform_user_id": F.trim(F.col(user)), "event_time": time, "event_type": etype,
            "item_id": F.trim(F.col(item)), "category_code": text(category_code), "category_ref": text(category_ref),
            "brand": text(brand), "price": F.lit(None).cast("double") if price is None else price,
            "session_id": text(session_id), "campaign_id": text(None), "_reject_reason": reason}


def _rees46(limits: IngestConfig) -> dict[str, Column]:
    time = F.try_to_timestamp(F.trim(F.col("event_time")), F.lit("yyyy-MM-dd HH:mm:ss z"))
    etype = _mapped_type(F.trim(F.col("event_type")),
                         {t: t for t in ("view", "cart", "remove_from_cart", "purchase")})
    price = _to_double(F.col("price"))
    reason = _first_reason(
        (_blank(F.col("user_id")), "missing user"),
        *_time_rules(F.col("event_time"), time, limits),
        _unknown_type(F.col("event_type"), etype),
        (_blank(F.col("product_id")), "missing item"),
        *_price_rules(F.col("price"), price, limits),
    )
    return _event("user_id", time, etype, "product_id", reason, category_code=_nullify(F.col("category_code")),
                  category_ref=_nullify(F.col("category_id")), brand=_nullify(F.col("brand")), price=price,
                  session_id=_nullify(F.col("user_session")))


def _taobao(limits: IngestConfig) -> dict[str, Column]:
    time = _epoch(F.col("timestamp"), 1)
    etype = _mapped_type(F.trim(F.col("behavior_type")),
                         {"pv": "view", "cart": "cart", "fav": "favorite", "buy": "purchase"})
    reason = _first_reason(
        (_blank(F.col("user_id")), "missing user"),
        *_time_rules(F.col("timestamp"), time, limits),
        _unknown_type(F.col("behavior_type"), etype),
        (_blank(F.col("item_id")), "missing item"),
    )
    return _event("user_id", time, etype, "item_id", reason, category_ref=_nullify(F.col("category_id")))


def _retailrocket(limits: IngestConfig) -> dict[str, Column]:
    time = _epoch(F.col("timestamp"), 1000)
    etype = _mapped_type(F.trim(F.col("event")), {"view": "view", "addtocart": "cart", "transaction": "purchase"})
    reason = _first_reason(
        (_blank(F.col("visitorid")), "missing user"),
        *_time_rules(F.col("timestamp"), time, limits),
        _unknown_type(F.col("event"), etype),
        (_blank(F.col("itemid")), "missing item"),
    )
    return _event("visitorid", time, etype, "itemid", reason, session_id=_nullify(F.col("transactionid")))


def _taobao_ads(limits: IngestConfig) -> dict[str, Column]:
    time = _epoch(F.col("time_stamp"), 1)
    clk, nonclk = F.trim(F.col("clk")), F.trim(F.col("nonclk"))
    reason = _first_reason(
        (_blank(F.col("user")), "missing user"),
        *_time_rules(F.col("time_stamp"), time, limits),
        (_blank(F.col("adgroup_id")), "missing item"),
        (~F.coalesce(clk.isin("0", "1"), F.lit(False)),
         F.concat(F.lit("clk not 0/1 '"), F.coalesce(clk, F.lit("")), F.lit("'"))),
        (~F.coalesce(nonclk.isin("0", "1"), F.lit(False)),
         F.concat(F.lit("nonclk not 0/1 '"), F.coalesce(nonclk, F.lit("")), F.lit("'"))),
    )
    mapping = _event("user", time, F.lit("ad_impression"), "adgroup_id", reason, session_id=_nullify(F.col("pid")))
    mapping["_clicked"] = F.coalesce(clk == "1", F.lit(False))
    return mapping


FORMATS: dict[str, FeedFormat] = {
    "rees46": FeedFormat(
        "rees46",
        ("event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id",
         "user_session"),
        ("event_time", "event_type", "product_id", "user_id"), True, _rees46),
    "taobao": FeedFormat("taobao", ("user_id", "item_id", "category_id", "behavior_type", "timestamp"),
                         ("user_id", "item_id", "category_id", "behavior_type", "timestamp"), False, _taobao),
    "retailrocket": FeedFormat("retailrocket", ("timestamp", "visitorid", "event", "itemid", "transactionid"),
                               ("timestamp", "visitorid", "event", "itemid"), True, _retailrocket),
    "taobao_ads": FeedFormat("taobao_ads", ("user", "time_stamp", "adgroup_id", "pid", "nonclk", "clk"),
                             ("user", "time_stamp", "adgroup_id", "clk"), True, _taobao_ads),
}

IDENTITY_COLUMNS = ("platform", "platform_user_id", "user_id")


def price_column(raw: Column) -> Column:
    """A raw price string as a double, NULL when empty or not a number."""
    return _to_double(raw)


def item_rules(limits: IngestConfig) -> Column:
    """Reject reason for an item catalog row (or NULL)."""
    price = _to_double(F.col("price"))
    return _first_reason((_blank(F.col("item_id")), "missing item"), *_price_rules(F.col("price"), price, limits))


def ad_feature_rules(limits: IngestConfig, has_price: bool) -> Column:
    """Reject reason for an ad_feature row (or NULL)."""
    missing = (_blank(F.col("adgroup_id")), "missing adgroup_id")
    if not has_price:
        return _first_reason(missing)
    return _first_reason(missing, *_price_rules(F.col("price"), _to_double(F.col("price")), limits))
