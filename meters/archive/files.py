"""A readings partition as a Parquet file: the columns and their exact types, the export in chunks through a
server-side cursor, the figures a file and a partition must both show, and a reading found by id in a file.

Types are exact: kWh and prices as Parquet decimals of the column's own precision (never floats), ids as
UUIDs, times as UTC timestamps (microseconds, PostgreSQL's own precision), JSON columns as their text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from django.db import models

from meters.models import MeterReading

SCHEMA_VERSION = 1
CHUNK_ROWS = 50_000  # rows fetched and written at a time: one Parquet row group
PROGRESS_EVERY = 500_000
FIGURE_COLUMNS = ["meter_id", "kwh_amount", "mintable_kwh", "token_amount"]


@dataclass(frozen=True)
class Figures:
    """What a partition and its file must both show."""

    rows: int
    meters: int
    kwh_sum: Decimal
    mintable_kwh_sum: Decimal
    token_units_sum: int

    def as_json(self) -> dict:
        return {name: str(value) if isinstance(value, Decimal) else value for name, value in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> Figures:
        return cls(
            rows=int(data["rows"]),
            meters=int(data["meters"]),
            kwh_sum=Decimal(data["kwh_sum"]),
            mintable_kwh_sum=Decimal(data["mintable_kwh_sum"]),
            token_units_sum=int(data["token_units_sum"]),
        )


def _fields() -> list[models.Field]:
    return list(MeterReading._meta.concrete_fields)


def _arrow_type(field: models.Field) -> pa.DataType:
    target = field.target_field if field.is_relation else field
    if isinstance(target, models.UUIDField):
        return pa.uuid()
    if isinstance(target, models.DecimalField):
        make = pa.decimal128 if target.max_digits <= 38 else pa.decimal256
        return make(target.max_digits, target.decimal_places)
    if isinstance(target, models.DateTimeField):
        return pa.timestamp("us", tz="UTC")
    if isinstance(target, models.BooleanField):
        return pa.bool_()
    if isinstance(target, models.IntegerField):  # every integer kind, big and positive ones included
        return pa.int64()
    if isinstance(target, models.CharField | models.TextField | models.JSONField):
        return pa.string()
    raise TypeError(f"{field.name}: no Parquet type for {type(target).__name__}; add one to meters/archive/files.py")


def arrow_schema(*, partition: str = "") -> pa.Schema:
    schema = pa.schema([pa.field(f.column, _arrow_type(f), nullable=f.null) for f in _fields()])
    return schema.with_metadata({"gridtoken.schema_version": str(SCHEMA_VERSION), "gridtoken.partition": partition})


def _json_columns() -> set[str]:
    return {f.column for f in _fields() if isinstance(f, models.JSONField)}


def select_sql(table: str) -> str:
    """Every column of ``table`` in the schema's order, JSON as PostgreSQL's text of it."""
    json_columns = _json_columns()
    columns = ", ".join(f'"{c}"::text' if c in json_columns else f'"{c}"' for c in (f.column for f in _fields()))
    return f'SELECT {columns} FROM "{table}"'  # noqa: S608 (a partition's name from the catalog)


def partition_figures(cursor, table: str) -> tuple[Figures, str]:
    """The partition's figures and a digest of every row's content (a sum of 60 bits of each row's md5, which
    any insert, update or delete changes), in one scan."""
    cursor.execute(
        "SELECT count(*), count(DISTINCT meter_id), coalesce(sum(kwh_amount), 0), coalesce(sum(mintable_kwh), 0),"  # noqa: S608
        " coalesce(sum(token_amount), 0), coalesce(sum(('x' || substr(md5(r::text), 1, 15))::bit(60)::bigint), 0)"
        f' FROM "{table}" AS r'
    )
    rows, meters, kwh, mintable, units, digest = cursor.fetchone()
    return Figures(rows, meters, kwh, mintable, int(units)), f"{rows}:{digest}"


def parquet_write(cursor, table: str, path: Path, *, progress: Callable[[str], None]) -> int:
    """Write every row of ``table`` to ``path`` (zstd-compressed Parquet), ``CHUNK_ROWS`` at a time from a
    server-side cursor, so memory holds one chunk whatever the partition's size. Returns the rows written."""
    schema = arrow_schema(partition=table)
    written = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        cursor.execute(select_sql(table))
        while rows := cursor.fetchmany(CHUNK_ROWS):
            columns = zip(*rows, strict=True)
            arrays = [pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)]
            writer.write_batch(pa.record_batch(arrays, schema=schema))
            written += len(rows)
            if written % PROGRESS_EVERY < CHUNK_ROWS:
                progress(f"{table}: {written:,} readings written")
    return written


def _sum(array) -> Decimal:
    total = pc.sum(array).as_py()
    return Decimal(0) if total is None else total


def parquet_figures(handle) -> tuple[Figures, int]:
    """The figures of a Parquet file read in batches, and the schema version its metadata names."""
    parquet = pq.ParquetFile(handle)
    rows, meters = 0, set()
    kwh, mintable, units = Decimal(0), Decimal(0), 0
    for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=FIGURE_COLUMNS):
        rows += batch.num_rows
        meters.update(pc.unique(batch["meter_id"].storage).to_pylist())
        kwh += _sum(batch["kwh_amount"])
        mintable += _sum(batch["mintable_kwh"])
        units += int(_sum(batch["token_amount"].cast(pa.decimal128(38, 0))))
    metadata = parquet.schema_arrow.metadata or {}
    version = int(metadata.get(b"gridtoken.schema_version", b"0"))
    return Figures(rows, len(meters), kwh, mintable, units), version


def parquet_find(handle, reading_id) -> dict | None:
    """The reading with ``reading_id`` in a Parquet file, or None: the id column is read row group by row
    group (the file is not sorted by id), then the one row of the group that holds it."""
    parquet = pq.ParquetFile(handle)
    target = pa.scalar(reading_id.bytes, pa.binary(16))
    for group in range(parquet.num_row_groups):
        ids = parquet.read_row_group(group, columns=["id"]).column("id").combine_chunks().storage
        position = pc.index(ids, target).as_py()
        if position >= 0:
            return parquet.read_row_group(group).slice(position, 1).to_pylist()[0]
    return None


def reading_document(row: dict) -> dict:
    """A reading's columns as JSON-ready values: JSON columns parsed back, the rest as they are (the caller
    encodes Decimals, UUIDs and times as text)."""
    json_columns = _json_columns()
    return {
        column: json.loads(value) if column in json_columns and value is not None else value
        for column, value in row.items()
    }
