"""Feast offline store over the folders of Parquet part files the jobs and the backfill write.

``offline_store: type: usp_feast.offline_store.PartitionedParquetOfflineStore`` in
``feature_store.yaml``. It is Feast's DuckDB offline store (point-in-time joins in SQL) with
one change, how a ``FileSource`` is read: its path, relative to the repository (as Feast's
``file`` store resolves it, whatever the working directory), names a folder whose
``<date>/part-*.parquet`` files are read together; files still being written (hidden names)
are skipped; and where the rows are versions (a ``created_ts`` column beside ``event_id``, as in
signal views), only each event's newest version is read. That is the versioned store's read rule
(:func:`usp_feast.versions.collapse_versions`), so a backfilled correction replaces the value it
corrects in training sets. The view itself declares no ``created_timestamp_column``: Feast would
then require that column in every ``FeatureStore.push`` DataFrame.

Why not Feast's ``file`` store: with feast 0.67.0 its Dask join silently drops an entity row
when a view has rows for that user but none at or before the row's time (or none within the
TTL), drops it from the whole result when several views are asked for, raises
"Divisions calculation failed for non-numeric column 'event_ts'" on some views, and loses the
``created_timestamp_column`` tie-break (an unstable sort), so a corrected row does not reliably
win. Every real training set meets the first; corrections meet the last. The DuckDB join keeps
every entity row (nulls where nothing is known yet). tests/e2e/test_training_sets.py checks it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from feast import FileSource
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.ibis import (
    get_historical_features_ibis,
    pull_all_from_table_or_query_ibis,
    pull_latest_from_table_or_query_ibis,
)

from usp_feast.offline import CREATED_COLUMN, part_files

__all__ = [
    "OfflineSourceError",
    "PartitionedParquetOfflineStore",
    "PartitionedParquetOfflineStoreConfig",
]


class OfflineSourceError(FileNotFoundError):
    """A view's offline folder holds no rows yet."""


class PartitionedParquetOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Config of :class:`PartitionedParquetOfflineStore` (DuckDB's options)."""

    type: Literal["usp_feast.offline_store.PartitionedParquetOfflineStore"] = (  # type: ignore[assignment]
        "usp_feast.offline_store.PartitionedParquetOfflineStore"
    )


def _read_parts(data_source: Any, repo_path: str) -> Any:
    import ibis

    if not isinstance(data_source, FileSource) or "://" in data_source.path:
        return feast_duckdb._read_data_source(data_source, repo_path)
    folder = Path(data_source.path)
    if not folder.is_absolute():
        folder = Path(repo_path) / folder
    files = part_files(folder)
    if not files:
        raise OfflineSourceError(
            f"{data_source.name}: no offline rows under {folder} yet; run its job or a backfill"
        )
    table = ibis.read_parquet([str(path) for path in files], union_by_name=True)
    if CREATED_COLUMN in table.columns and "event_id" in table.columns:
        # A signal's rows are versions: keep each event's newest, as readers of the store do.
        newest = ibis.row_number().over(
            group_by=[table.event_id], order_by=[ibis.desc(table[CREATED_COLUMN])]
        )
        table = table.mutate(_version_rank=newest)
        table = table.filter(table._version_rank == 0).drop("_version_rank")
    return table


def _ibis_io(config: Any) -> dict[str, Any]:
    """How Feast's ibis joins read and write here: DuckDB's, with the part-file reader."""
    options = config.offline_store
    return {
        "data_source_reader": _read_parts,
        "data_source_writer": feast_duckdb._write_data_source,
        "staging_location": options.staging_location,
        "staging_location_endpoint_override": options.staging_location_endpoint_override,
    }


class PartitionedParquetOfflineStore(DuckDBOfflineStore):
    """DuckDB point-in-time joins over partitioned Parquet part files."""

    @staticmethod
    def get_historical_features(  # type: ignore[override]
        config: Any,
        feature_views: Any,
        feature_refs: Any,
        entity_df: Any,
        registry: Any,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> Any:
        """Point-in-time join of ``entity_df`` with the views' offline rows."""
        return get_historical_features_ibis(
            config=config,
            feature_views=feature_views,
            feature_refs=feature_refs,
            entity_df=entity_df,
            registry=registry,
            project=project,
            full_feature_names=full_feature_names,
            **_ibis_io(config),
            filter_by_created_timestamp=filter_by_created_timestamp,
        )

    @staticmethod
    def pull_latest_from_table_or_query(  # type: ignore[override]
        config: Any,
        data_source: Any,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> Any:
        """Newest row per entity in a time range (``feast materialize``)."""
        return pull_latest_from_table_or_query_ibis(
            config=config,
            data_source=data_source,
            join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns,
            timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
            **_ibis_io(config),
        )

    @staticmethod
    def pull_all_from_table_or_query(  # type: ignore[override]
        config: Any,
        data_source: Any,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> Any:
        """Every row in a time range."""
        return pull_all_from_table_or_query_ibis(
            config=config,
            data_source=data_source,
            join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns,
            timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
            **_ibis_io(config),
        )
