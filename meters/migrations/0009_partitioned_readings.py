"""The readings table partitioned by month of reading_timestamp (docs/PARTITIONS.md).

Not atomic: on a populated table the copy runs in chunks of its own transactions and resumes where a crash
stopped it (``meters.repartition``); run ``manage.py readings_partition`` ahead of a deploy and this finds
the work done. On an empty table it takes well under a second.

The database side is ``meters.repartition``'s (the primary key becomes (id, reading_timestamp), every unique
index includes reading_timestamp); Django's state keeps ``id`` as the model's primary key, which it still is
(ids are unique uuids), and only learns the two constraints the partitioned table changes. Those state
operations touch no table: the shadow was built with them.
"""

from django.db import migrations, models


def forward(apps, schema_editor) -> None:
    from meters.repartition import repartition

    repartition(out=print if _populated() else None)


def backward(apps, schema_editor) -> None:
    from meters.repartition import unpartition

    unpartition()


def _populated() -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM meters_meterreading)")
        return cursor.fetchone()[0]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("meters", "0008_reading_index_diet"),
        ("minting", "0005_batch_time_indexes"),
    ]

    operations = [
        migrations.RunPython(forward, backward),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="meterreading", name="reading_one_per_window"),
                migrations.AddConstraint(
                    model_name="meterreading",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("source", "window")),
                        fields=("meter", "window_start", "reading_timestamp"),
                        name="reading_one_per_window",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="meterreading",
                    constraint=models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("source", "window"), _negated=True),
                            ("reading_timestamp", models.F("window_start")),
                            _connector="OR",
                        ),
                        name="reading_window_at_its_start",
                    ),
                ),
            ],
        ),
    ]
