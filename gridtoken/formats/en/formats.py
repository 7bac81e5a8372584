"""Dates and times as the admin shows them: ISO order, 24 h, one short line (UTC, settings.TIME_ZONE), instead of
English's "Dec. 6, 2026, 7:04 p.m.", which wraps in a list column and sorts badly by eye."""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
