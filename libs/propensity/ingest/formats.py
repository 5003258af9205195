"""Raw feed formats (DESIGN section 4): columns, validation rules and mapping to events.

Each format turns a DataFrame of raw string fields (named as in the public dataset)
into candidate events: ``platform_user_id, event_time, event_type, item_id,
category_code, category_ref, brand, price, session_id, campaign_id`` plus
``_reject_reason`` (NULL for a valid row). Rules are Spark column expressions, so
validation runs in the JVM without Python row functions. The first broken rule
names the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

MIN_TIME = "2000-01-01 00:00:00"
MAX_TIME = "2100-01-01 00:00:00"

EVENT_COLUMNS = ("platform_user_id", "event_time", "event_type", "item_id", "category_code", "category_ref",
                 "brand", "price", "session_id", "campaign_id")


@dataclass(frozen=True)
class FeedFormat:
    """A raw CSV format: its columns, whether files start with a header, and its mapping."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    has_header: bool
    to_events: Callable[[], dict[str, Column]]


def _blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def _first_reason(*rules: tuple[Column, Column | str]) -> Column:
    """CASE WHEN rule1 THEN reason1 WHEN ... END: the first broken rule wins."""
    expr: Column | None = None
    for broken, reason in rules:
        value = F.lit(reason) if isinstance(reason, str) else reason
        expr = F.when(broken, value) if expr is None else expr.when(broken, value)
    assert expr is not None
    return expr


def _epoch(c: Column, scale: int) -> Column:
    """Unix seconds (scale 1) or milliseconds (scale 1000) as a timestamp; NULL if not an integer."""
    digits = F.when(F.trim(c).rlike(r"^-?[0-9]{1,16}$"), F.trim(c).cast("long"))
    return F.timestamp_micros(digits * F.lit(1_000_000 // scale))


def _time_rules(raw: Column, parsed: Column) -> list[tuple[Column, Column | str]]:
    return [
        (_blank(raw), "missing timestamp"),
        (parsed.isNull(), F.concat(F.lit("bad timestamp '"), raw, F.lit("'"))),
        ((parsed < F.lit(MIN_TIME).cast("timestamp")) | (parsed >= F.lit(MAX_TIME).cast("timestamp")),
         F.concat(F.lit("timestamp out of range '"), raw, F.lit("'"))),
    ]


def _mapped_type(raw: Column, mapping: dict[str, str]) -> Column:
    expr: Column | None = None
    for source, target in mapping.items():
        expr = F.when(raw == source, target) if expr is None else expr.when(raw == source, target)
    assert expr is not None
    return expr


def _price_rules(raw: Column, price: Column) -> list[tuple[Column, Column | str]]:
    return [
        (~_blank(raw) & price.isNull(), F.concat(F.lit("bad price '"), raw, F.lit("'"))),
        (price < 0, F.concat(F.lit("negative price '"), raw, F.lit("'"))),
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


def _rees46() -> dict[str, Column]:
    time = F.try_to_timestamp(F.trim(F.col("event_time")), F.lit("yyyy-MM-dd HH:mm:ss z"))
    etype = _mapped_type(F.trim(F.col("event_type")),
                         {t: t for t in ("view", "cart", "remove_from_cart", "purchase")})
    price = _to_double(F.col("price"))
    reason = _first_reason(
        (_blank(F.col("user_id")), "missing user"),
        *_time_rules(F.col("event_time"), time),
        _unknown_type(F.col("event_type"), etype),
        (_blank(F.col("product_id")), "missing item"),
        *_price_rules(F.col("price"), price),
    )
    return _event("user_id", time, etype, "product_id", reason, category_code=_nullify(F.col("category_code")),
                  category_ref=_nullify(F.col("category_id")), brand=_nullify(F.col("brand")), price=price,
                  session_id=_nullify(F.col("user_session")))


def _taobao() -> dict[str, Column]:
    time = _epoch(F.col("timestamp"), 1)
    etype = _mapped_type(F.trim(F.col("behavior_type")),
                         {"pv": "view", "cart": "cart", "fav": "favorite", "buy": "purchase"})
    reason = _first_reason(
        (_blank(F.col("user_id")), "missing user"),
        *_time_rules(F.col("timestamp"), time),
        _unknown_type(F.col("behavior_type"), etype),
        (_blank(F.col("item_id")), "missing item"),
    )
    return _event("user_id", time, etype, "item_id", reason, category_ref=_nullify(F.col("category_id")))


def _retailrocket() -> dict[str, Column]:
    time = _epoch(F.col("timestamp"), 1000)
    etype = _mapped_type(F.trim(F.col("event")), {"view": "view", "addtocart": "cart", "transaction": "purchase"})
    reason = _first_reason(
        (_blank(F.col("visitorid")), "missing user"),
        *_time_rules(F.col("timestamp"), time),
        _unknown_type(F.col("event"), etype),
        (_blank(F.col("itemid")), "missing item"),
    )
    return _event("visitorid", time, etype, "itemid", reason, session_id=_nullify(F.col("transactionid")))


def _taobao_ads() -> dict[str, Column]:
    time = _epoch(F.col("time_stamp"), 1)
    clk, nonclk = F.trim(F.col("clk")), F.trim(F.col("nonclk"))
    reason = _first_reason(
        (_blank(F.col("user")), "missing user"),
        *_time_rules(F.col("time_stamp"), time),
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

ITEM_COLUMNS = ("item_id", "title", "category", "brand", "price")
AD_FEATURE_COLUMNS = ("adgroup_id", "cate_id", "campaign_id", "customer", "brand", "price")
IDENTITY_COLUMNS = ("platform", "platform_user_id", "user_id")


def price_column(raw: Column) -> Column:
    """A raw price string as a double, NULL when empty or not a number."""
    return _to_double(raw)


def item_rules() -> Column:
    """Reject reason for an item catalog row (or NULL)."""
    price = _to_double(F.col("price"))
    return _first_reason((_blank(F.col("item_id")), "missing item"), *_price_rules(F.col("price"), price))
