"""Device protocols: how readings reach the service other than its own REST shapes.

- ``bridge``: GridTokenX's aggregator-bridge envelope over REST (``/v1/private-network/ingest[/batch]``).
- ``mqtt``: the supervised MQTT ingester (``python manage.py ingest_mqtt``).

Both turn what devices send into the reading bodies ``meters.validation`` parses and store them through
``meters.services.batch``: the same validation, signatures, idempotency, duplicate rules and mint trigger.
"""
