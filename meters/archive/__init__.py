"""Readings' retention: expired monthly partitions exported to Parquet, verified, then dropped; archived
readings found by id (docs/RETENTION.md)."""
