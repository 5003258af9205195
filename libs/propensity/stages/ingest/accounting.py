"""Accounting of an ingest run: per feed ``read = accepted + duplicates + rejected``.

Each part of a run returns what it counted; :class:`FeedAccount` rows are made once, from
those counts, and never changed afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


@dataclass(frozen=True)
class Counted:
    """Lines read and lines rejected of one feed in one run."""

    read: int
    rejected: int

    @classmethod
    def of(cls, parsed: DataFrame) -> Counted:
        """Count the lines of a parsed feed (``_reject_reason`` set on rejected lines): one Spark job."""
        row = parsed.agg(F.count(F.lit(1)).alias("read"), F.count("_reject_reason").alias("rejected")).first()
        return cls(0, 0) if row is None else cls(int(row["read"]), int(row["rejected"]))


@dataclass(frozen=True)
class FeedAccount:
    """Accounting of one feed in one run: ``read = accepted + duplicates + rejected``."""

    platform: str
    feed: str
    files: int
    skipped_files: int
    read: int
    accepted: int
    duplicates: int
    rejected: int
    events_written: int

    @classmethod
    def of(cls, platform: str, feed: str, files: int, skipped_files: int, counted: Counted, accepted: int,
           events_written: int = 0) -> FeedAccount:
        """The account of a feed whose lines that are neither accepted nor rejected are duplicates."""
        return cls(platform, feed, files, skipped_files, counted.read, accepted,
                   counted.read - counted.rejected - accepted, counted.rejected, events_written)

    @property
    def balanced(self) -> bool:
        """Whether every line read is accounted for (no negative duplicate count)."""
        return self.duplicates >= 0 and self.read == self.accepted + self.duplicates + self.rejected


@dataclass(frozen=True)
class IngestReport:
    """What one ``ingest`` run did."""

    run_id: str
    started_at: datetime
    accounts: tuple[FeedAccount, ...] = field(default_factory=tuple)

    def format(self) -> str:
        """The accounting as a fixed-width text table."""
        head = ("platform", "feed", "files", "skipped", "read", "accepted", "duplicates", "rejected", "events")
        rows = [head] + [
            (a.platform, a.feed, str(a.files), str(a.skipped_files), str(a.read), str(a.accepted),
             str(a.duplicates), str(a.rejected), str(a.events_written))
            for a in self.accounts
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in rows]
        return "\n".join(lines)

    def event_rows_read(self) -> int:
        """Raw lines read from event and ad feeds."""
        return sum(a.read for a in self.accounts if a.feed in ("events", "ads"))
