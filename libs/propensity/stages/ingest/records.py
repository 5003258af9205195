"""Raw files -> CSV records, one per read: bytes checked as UTF-8, quoted line breaks kept inside their record.

* **Bytes.** Spark's text reader decompresses ``.gz`` and ``.bz2`` files by their extension and
  hands over each line's bytes undecoded. A line that is not valid UTF-8 is not decoded with
  replacement characters (that would invent a user such as ``shop:9000\\ufffd0002``): it is kept as
  text with every non-ASCII byte written ``\\xNN`` and flagged, and ingest rejects it.
* **Records.** A quoted field may hold line breaks (RFC 4180). Files whose lines all hold an even
  number of ``"`` are read line = record, split over tasks. A file with an odd-quote line is read
  in order in one task, as Spark's own ``multiLine`` CSV reader does, and a small state machine
  (:func:`group_records`) joins the lines of each record with ``\\n``. A quoted field still open
  after :data:`MAX_RECORD_LINES` lines, or at the end of the file, is not allowed to swallow the
  rest: its first line becomes a record of its own, flagged unterminated, and reading resumes on
  the next line. So every physical line belongs to exactly one record, and a record counts once.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

if TYPE_CHECKING:
    import pandas as pd

    from propensity.stages.ingest.files import RawFile

#: Most physical lines one record may span before its open quote counts as unterminated.
MAX_RECORD_LINES = 100

_QUOTE, _COMMA = '"', ","
_RECORD_SCHEMA = "_raw STRING, _source_file STRING, _invalid_utf8 BOOLEAN, _unterminated BOOLEAN"


def ends_inside_quotes(line: str, inside: bool) -> bool:
    """Whether a quoted field is still open at the end of ``line`` (``inside``: open at its start).

    A ``"`` opens a quoted field only at the start of a field; inside one, ``""`` is a quote and
    a single ``"`` closes it. A stray ``"`` inside an unquoted field is an ordinary character.
    """
    if _QUOTE not in line:
        return inside
    field_start = not inside
    i = 0
    while i < len(line):
        c = line[i]
        if inside:
            if c == _QUOTE:
                if line[i + 1:i + 2] == _QUOTE:
                    i += 2
                    continue
                inside = False
        else:
            if c == _QUOTE and field_start:
                inside = True
            field_start = c == _COMMA
        i += 1
    return inside


def group_records(lines: Iterable[tuple[str, bool]], max_lines: int = MAX_RECORD_LINES
                  ) -> Iterator[tuple[str, bool, bool]]:
    """Group ``(text, invalid_utf8)`` lines of one file into ``(record, invalid_utf8, unterminated)``."""
    pending: list[tuple[str, bool]] = []  # lines to read again after an unterminated field
    source = iter(lines)
    record: list[tuple[str, bool]] = []
    inside = False
    while True:
        line = pending.pop(0) if pending else next(source, None)
        if line is None:
            if not record:
                return
            # End of file inside a quoted field: the first line alone is the bad record.
            yield record[0][0], record[0][1], True
            pending, record, inside = record[1:], [], False
            continue
        record.append(line)
        inside = ends_inside_quotes(line[0], inside)
        if not inside:
            yield "\n".join(t for t, _ in record), any(bad for _, bad in record), False
            record = []
        elif len(record) > max_lines:
            yield record[0][0], record[0][1], True
            pending, record, inside = record[1:] + pending, [], False


def read_records(spark: SparkSession, files: list[RawFile], header: str | None) -> DataFrame:
    """Non-blank records of the files (header records left out) with lineage and byte-level flags.

    Columns: ``_raw`` (the record's text), ``_source_file``, ``_file_modified_at``,
    ``_invalid_utf8`` and ``_unterminated``.
    """
    # One scan per file tagged with literals: robust through joins and shuffles, where
    # _metadata.file_path / input_file_name() can come back empty or URI-encoded.
    lines = functools.reduce(DataFrame.unionAll, [_lines(spark, f) for f in files])
    odd = (F.length("_text") - F.length(F.regexp_replace("_text", _QUOTE, ""))) % 2 == 1
    multi_line = sorted(r[0] for r in lines.where(odd).select("_source_file").distinct().collect())
    records = (lines.where(~F.col("_source_file").isin(multi_line))
               .select(F.col("_text").alias("_raw"), "_source_file", "_invalid_utf8",
                       F.lit(False).alias("_unterminated")))
    if multi_line:
        ordered = (lines.where(F.col("_source_file").isin(multi_line)).repartition("_source_file")
                   .sortWithinPartitions("_source_file", "_block", "_pos"))
        records = records.unionByName(ordered.select("_source_file", "_text", "_invalid_utf8")
                                      .mapInPandas(_grouped, _RECORD_SCHEMA))
    modified = F.create_map(*[c for f in files for c in (F.lit(f.path), F.timestamp_micros(F.lit(_micros(f))))])
    records = records.where(F.trim("_raw") != "").withColumn("_file_modified_at", modified[F.col("_source_file")])
    if header is not None:
        records = records.where(F.regexp_replace("_raw", "^\ufeff", "") != F.lit(header))
    return records


def _micros(f: RawFile) -> int:
    return int(f.modified_at.replace(tzinfo=UTC).timestamp() * 1_000_000)


def _lines(spark: SparkSession, f: RawFile) -> DataFrame:
    value = F.col("value")
    text = F.when(F.is_valid_utf8(value), value).otherwise(escaped_bytes(value.cast("binary")))
    return spark.read.text(f.path).select(
        F.regexp_replace(text, "\r$", "").alias("_text"), (~F.is_valid_utf8(value)).alias("_invalid_utf8"),
        F.lit(f.path).alias("_source_file"),
        # Order of the lines in their file, for the files read in order.
        F.input_file_block_start().alias("_block"), F.monotonically_increasing_id().alias("_pos"))


def escaped_bytes(raw: Column) -> Column:
    """Bytes as text: ASCII as it is, every other byte as ``\\xNN``."""
    chars = F.split(F.decode(raw, "ISO-8859-1"), "")
    return F.array_join(F.transform(chars, lambda c: F.when(
        F.ascii(c) >= 128, F.concat(F.lit("\\x"), F.lpad(F.hex(F.ascii(c)), 2, "0"))).otherwise(c)), "")


def _grouped(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas: ordered lines of whole files -> their records."""
    import pandas as pd

    rows = itertools.chain.from_iterable(
        zip(b["_source_file"], b["_text"], b["_invalid_utf8"], strict=True) for b in batches)
    out: list[tuple[str, str, bool, bool]] = []
    for path, file_rows in itertools.groupby(rows, key=lambda r: r[0]):
        for text, invalid, unterminated in group_records((t, bool(bad)) for _, t, bad in file_rows):
            out.append((text, path, invalid, unterminated))
            if len(out) >= 10_000:
                yield pd.DataFrame(out, columns=["_raw", "_source_file", "_invalid_utf8", "_unterminated"])
                out = []
    if out:
        yield pd.DataFrame(out, columns=["_raw", "_source_file", "_invalid_utf8", "_unterminated"])
