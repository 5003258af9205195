"""The event sequence the models read: ``event_ids``, a row's recent events as integer ids, field by field.

``training_examples.event_ids`` is a flat ``ARRAY<INT>``: :data:`EVENT_FIELDS` ids per position,
:data:`FIELDS` of them, positions oldest to newest after one leading *target* position::

    [target, event_1, event_2, ..., event_n]      n <= features.max_sequence_events

- position 0, the target: ``type`` = :data:`TARGET_TYPE`, ``platform`` = the platform the row
  predicts for, ``gap`` = the time from the newest event to the snapshot (recency); other fields 0;
- each event: its ``type`` (1..7, :data:`~propensity.core.schema.EVENT_TYPES` order), ``platform``,
  ``category``, ``brand``, ``price`` bucket, ``item``, ``gap`` (time since the previous event, 0
  for the first) and ``age`` (time from the event to the snapshot), each a bucket id.

Values are mapped to ids without a vocabulary, so the features stage can compute them in Spark and
every model reads the same ids: platform, category, brand and item are hashed
(``1 + pmod(xxhash64(value), size - 1)``; items with their platform, since item ids are per platform),
price, gap and age are bucketed by the bounds below. Id 0 always means *unknown / padding*. A model
learns one embedding per id of each field (item buckets are the item tokens learned in pretraining).
"""

from __future__ import annotations

from propensity.core.schema import EVENT_TYPES

#: Name of the ``training_examples`` column holding the ids.
SEQUENCE_COLUMN = "event_ids"

#: The fields of one position, in storage order.
EVENT_FIELDS = ("type", "platform", "category", "brand", "price", "item", "gap", "age")
FIELDS = len(EVENT_FIELDS)

#: Type id of the leading target position (event types are 1 .. len(EVENT_TYPES)).
TARGET_TYPE = len(EVENT_TYPES) + 1
#: Index in ``event_ids`` of the target platform's id (position 0, field ``platform``).
TARGET_PLATFORM = EVENT_FIELDS.index("platform")

#: Upper bounds of the price buckets p0 .. p8; p9 is everything above (ids 1..10, 0: unknown price).
PRICE_BOUNDS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)

#: (upper bound in seconds, word) of the gap buckets; longer gaps are ``LONGEST_GAP`` (ids 1..15).
GAP_BUCKETS = ((60, "+0m"), (300, "+1m"), (600, "+5m"), (1800, "+10m"), (3600, "+30m"), (7200, "+1h"),
               (21_600, "+2h"), (43_200, "+6h"), (86_400, "+12h"), (172_800, "+1d"), (345_600, "+2d"),
               (604_800, "+4d"), (1_209_600, "+1w"), (2_419_200, "+2w"))
LONGEST_GAP = "+4w"

#: Upper bounds (seconds before the snapshot) of the age buckets: 1 h, 6 h, 1, 2, 3, 5, 7, 10, 14, 21 days
#: (ids 1..10); older events get id 11.
AGE_BOUNDS = (3_600, 21_600, 86_400, 172_800, 259_200, 432_000, 604_800, 864_000, 1_209_600, 1_814_400)

#: Ids per field, the padding id 0 included (the size of each embedding table).
FIELD_SIZES: dict[str, int] = {
    "type": TARGET_TYPE + 1,
    "platform": 1024,
    "category": 4096,
    "brand": 4096,
    "price": len(PRICE_BOUNDS) + 2,
    "item": 16384,
    "gap": len(GAP_BUCKETS) + 2,
    "age": len(AGE_BOUNDS) + 2,
}

#: Fields whose ids are hashes of a value (the others are buckets or enumerations).
HASHED_FIELDS = ("platform", "category", "brand", "item")
