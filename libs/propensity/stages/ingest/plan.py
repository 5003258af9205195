"""What an ingest run will read: every configured feed and side file, resolved and validated up front.

Planning lists the files and checks headers before any table is touched, so a bad config
(a missing file, a header without a required column) fails with one line and no side effects.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from propensity.core.config import Config
from propensity.stages.ingest.files import RawFile, header_columns, list_files, read_first_line
from propensity.stages.ingest.formats import FORMATS, IDENTITY_COLUMNS, FeedFormat


@dataclass(frozen=True)
class Feed:
    """One configured event or ad feed and its files."""

    platform: str
    kind: str
    fmt: FeedFormat
    files: tuple[RawFile, ...]
    columns: tuple[str, ...]
    header: str | None

    @property
    def name(self) -> str:
        """Feed name used for the bronze table: the platform, with ``_ads`` for ad feeds."""
        return self.platform if self.kind == "events" else f"{self.platform}_ads"


@dataclass(frozen=True)
class SideFile:
    """A catalog, ad_feature or identity file with its validated header."""

    platform: str
    kind: str
    files: tuple[RawFile, ...]
    columns: tuple[str, ...]
    header: str

    @property
    def paths(self) -> list[str]:
        """The files' paths."""
        return [f.path for f in self.files]


def plan_feeds(spark: SparkSession, cfg: Config) -> list[Feed]:
    """Resolve and validate the event and ad feeds of the config."""
    feeds = [_plan_feed(spark, p.name, "events", FORMATS[p.format], p.events) for p in cfg.platforms]
    feeds += [_plan_feed(spark, a.platform, "ads", FORMATS[a.format], a.path) for a in cfg.ads]
    return feeds


def _plan_feed(spark: SparkSession, platform: str, kind: str, fmt: FeedFormat, pattern: str) -> Feed:
    what = f"platform {platform} {kind} ({fmt.name})"
    files = list_files(spark, pattern, what)
    if not fmt.has_header:
        return Feed(platform, kind, fmt, tuple(files), fmt.columns, None)
    columns = header_columns(spark, files, fmt.required, what)
    return Feed(platform, kind, fmt, tuple(files), tuple(columns), read_first_line(spark, files[0].path))


def plan_side_files(spark: SparkSession, cfg: Config) -> list[SideFile]:
    """Resolve and validate item catalogs, ad_feature files and the identity file."""
    wanted: list[tuple[str, str, str, tuple[str, ...]]] = []
    wanted += [(p.name, "items", p.items, ("item_id",)) for p in cfg.platforms if p.items]
    wanted += [(a.platform, "ad_feature", a.ad_feature, ("adgroup_id",)) for a in cfg.ads if a.ad_feature]
    if cfg.identity:
        wanted.append(("*", "identity", cfg.identity, IDENTITY_COLUMNS))
    planned = []
    for platform, kind, pattern, required in wanted:
        what = f"{kind} file" if platform == "*" else f"platform {platform} {kind}"
        files = list_files(spark, pattern, what)
        columns = header_columns(spark, files, required, what)
        planned.append(SideFile(platform, kind, tuple(files), tuple(columns), read_first_line(spark, files[0].path)))
    return planned
