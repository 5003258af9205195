"""``behavior_text``: the user's recent events on all platforms as one line of words, for people.

The models read the same events as integer ids (``event_ids``, see
:mod:`propensity.core.sequence`); this text is what an analyst reads in ``training_examples``
to see a row's history at a glance. Format (words separated by single spaces)::

    EVENT ([GAP] EVENT)* GAP <target:PLATFORM>
    EVENT = [PLATFORM] EVENT_TYPE [CATEGORY] [BRAND] [PRICE]

for example::

    [shop] view electronics.smartphone samsung p5 [shop] cart electronics.smartphone samsung p5
    +1d [app] ad_impression electronics.headphone sony p3 +4d <target:shop>

- Events: the user's events of **every** type on **all** platforms with ``event_time`` in
  ``[T - lookback_days, T)``, oldest to newest; only the most recent
  ``features.max_sequence_events`` are kept. Ties in ``event_time`` are ordered by
  platform name, then event type in the order ``view, cart, remove_from_cart, favorite,
  purchase, ad_impression, ad_click``, then ``event_id``, so the text is identical across
  runs and machines.
- ``[PLATFORM]``: the event's platform; ``EVENT_TYPE``: the event type as stored in ``events``.
- ``CATEGORY`` / ``BRAND``: lower-cased, runs of blanks replaced by ``_``; a purely numeric
  category id gets a ``c`` prefix (``c4756105``) and a numeric brand id a ``b`` prefix; left
  out when unknown. Category paths keep their dots (``electronics.smartphone``).
- ``PRICE``: ``p0`` .. ``p9``, the price bucket with upper bounds 5, 10, 25, 50, 100, 250,
  500, 1000, 2500 (``p9`` is 2500 and more); left out when unknown.
- ``GAP``: time since the previous event, rounded down to one of ``+1m +5m +10m +30m
  +1h +2h +6h +12h +1d +2d +4d +1w +2w +4w``, left out when it is under a minute (every
  event starts with its ``[PLATFORM]`` word, so events stay delimited). The gap before
  ``<target:...>`` is from the last event to T (recency) and is always there (``+0m``
  under a minute).
- ``<target:PLATFORM>``: the platform the row predicts for, after the newest event.

Built with Spark SQL functions only, no Python UDF: per ``(user_id, platform)`` a sorted
``collect_list`` of event structs, cut to the newest N; per user (a window) the platforms'
lists flattened, sorted and cut again; then ``transform`` + ``array_join`` into words.
"""

from __future__ import annotations

from pyspark.sql import Column, WindowSpec
from pyspark.sql import functions as F

from propensity.core.schema import EVENT_TYPES
from propensity.core.sequence import (
    AGE_BOUNDS,
    FIELD_SIZES,
    GAP_BUCKETS,
    LONGEST_GAP,
    PRICE_BOUNDS,
    TARGET_TYPE,
)
from propensity.stages.features.windows import Windows, epoch_seconds


def gap_word(seconds: Column) -> Column:
    """The gap word for a number of seconds."""
    bound, word = GAP_BUCKETS[0]
    expr = F.when(seconds < bound, F.lit(word))
    for bound, word in GAP_BUCKETS[1:]:
        expr = expr.when(seconds < bound, F.lit(word))
    return expr.otherwise(F.lit(LONGEST_GAP))


def price_word(price: Column) -> Column:
    """``p0`` .. ``p9`` for a price, NULL when the price is unknown."""
    expr = F.when(price.isNull() | (price < 0), F.lit(None).cast("string"))
    for i, bound in enumerate(PRICE_BOUNDS):
        expr = expr.when(price < bound, F.lit(f"p{i}"))
    return expr.otherwise(F.lit(f"p{len(PRICE_BOUNDS)}"))


def value_word(value: Column, numeric_prefix: str) -> Column:
    """A category or brand as one lower-case word; NULL when blank."""
    word = F.regexp_replace(F.lower(F.trim(value)), r"\s+", "_")
    return (F.when(word.isNull() | (word == ""), F.lit(None).cast("string"))
            .when(word.rlike(r"^[0-9]+$"), F.concat(F.lit(numeric_prefix), word))
            .otherwise(word))


def event_word_group(platform: Column, event_type: Column, category: Column, brand: Column,
                     price: Column) -> Column:
    """The words of one event: ``[platform] type category brand pN`` (unknown parts left out)."""
    return F.concat_ws(" ", F.concat(F.lit("["), platform, F.lit("]")), event_type, value_word(category, "c"),
                       value_word(brand, "b"), price_word(price))


def recent_events(w: Windows) -> Column:
    """Aggregate expression for ``groupBy("user_id", "platform")``: the history events, sorted oldest first.

    Each event is a struct ``(t, p, r, id, type, category, brand, price, item)`` whose first four
    fields are the sort key (time, platform, event type rank, event id); the rank is also the
    event's type id (1..7).
    """
    rank = F.array_position(F.array(*[F.lit(t) for t in EVENT_TYPES]), F.col("event_type")).cast("int")
    event = F.struct(F.col("event_time").alias("t"), F.col("platform").alias("p"), rank.alias("r"),
                     F.col("event_id").alias("id"), F.col("event_type").alias("type"), "category", "brand", "price",
                     F.col("item_id").alias("item"))
    return F.array_sort(F.collect_list(F.when(w.in_history(), event)))


def newest(events: Column, max_events: int) -> Column:
    """The last ``max_events`` elements of a sorted array (all of them when it is shorter)."""
    return F.slice(events, F.greatest(F.size(events) - max_events + 1, F.lit(1)), max_events)


def user_events(user: WindowSpec, recent: str, max_events: int) -> Column:
    """Window expression: the user's newest events over all platforms, sorted, from per-platform ``recent`` arrays."""
    return F.array_sort(F.flatten(F.collect_list(newest(F.col(recent), max_events)).over(user)))


def sequence_text(events: Column, w: Windows) -> Column:
    """The text of a sorted, non-empty event array (already cut to the newest ones), up to the recency gap.

    :param events: a column reference (it is read once per element).
    :param w: the snapshot's windows.
    """

    def event_words(e: Column, i: Column) -> Column:
        words = event_word_group(e["p"], e["type"], e["category"], e["brand"], e["price"])
        gap = F.unix_seconds(e["t"]) - F.unix_seconds(events[i - 1]["t"])
        return F.when((i == 0) | (gap < GAP_BUCKETS[0][0]), words).otherwise(F.concat_ws(" ", gap_word(gap), words))

    recency = gap_word(F.lit(epoch_seconds(w.snapshot_date)) - F.unix_seconds(F.element_at(events, -1)["t"]))
    return F.concat_ws(" ", F.array_join(F.transform(events, event_words), " "), recency)


def target_text(sequence: Column, platform: Column) -> Column:
    """The final ``behavior_text``: the sequence followed by ``<target:platform>``."""
    return F.concat(sequence, F.lit(" <target:"), platform, F.lit(">"))


def hashed_id(value: Column, field: str) -> Column:
    """The id of a hashed field's value: ``1 + pmod(xxhash64(value), size - 1)``; 0 when the value is NULL."""
    size = FIELD_SIZES[field]
    return F.when(value.isNull(), F.lit(0)).otherwise(F.pmod(F.xxhash64(value), F.lit(size - 1)) + 1).cast("int")


def bucket_id(value: Column, bounds: tuple[float, ...]) -> Column:
    """1 + the number of ``bounds`` at or below ``value`` (1 .. len(bounds) + 1); 0 when NULL or negative."""
    expr = F.when(value.isNull() | (value < 0), F.lit(0))
    for i, bound in enumerate(bounds):
        expr = expr.when(value < bound, F.lit(i + 1))
    return expr.otherwise(F.lit(len(bounds) + 1)).cast("int")


_GAP_BOUNDS = tuple(float(b) for b, _ in GAP_BUCKETS)


def sequence_ids(events: Column, w: Windows, platform: Column) -> Column:
    """``event_ids`` (see :mod:`propensity.core.sequence`) of a sorted, non-empty event array and the row's
    target ``platform``.

    :param events: a column reference (it is read once per element).
    """
    t = epoch_seconds(w.snapshot_date)

    def ids(e: Column, i: Column) -> Column:
        gap = F.unix_seconds(e["t"]) - F.unix_seconds(events[i - 1]["t"])
        return F.array(
            e["r"], hashed_id(e["p"], "platform"), hashed_id(value_word(e["category"], "c"), "category"),
            hashed_id(value_word(e["brand"], "b"), "brand"), bucket_id(e["price"], PRICE_BOUNDS),
            hashed_id(F.when(e["item"].isNotNull(), F.concat(e["p"], F.lit(":"), e["item"])), "item"),
            F.when(i == 0, F.lit(0)).otherwise(bucket_id(gap, _GAP_BOUNDS)),
            bucket_id(F.lit(t) - F.unix_seconds(e["t"]), AGE_BOUNDS))

    recency = F.lit(t) - F.unix_seconds(F.element_at(events, -1)["t"])
    target = F.array(F.lit(TARGET_TYPE), hashed_id(platform, "platform"), F.lit(0), F.lit(0), F.lit(0), F.lit(0),
                     bucket_id(recency, _GAP_BOUNDS), F.lit(0))
    return F.concat(target, F.flatten(F.transform(events, ids)))
