"""MQTT ingestion: meters publish readings to a broker; ``manage.py ingest_mqtt`` stores them.

- ``topics``: the topic layouts (``MQTT_TOPICS``) and which meter a topic speaks for.
- ``meters.formats`` (with the other formats): one parser per layout (GridToken JSON, Tasmota SML, Shelly
  EMData / NotifyStatus), each turning a message into the reading body ``readings_submit_batch`` already takes.
- ``delivery``: one received PUBLISH and its outcome; ``poison``: isolating a message that keeps failing.
- ``ingester``: the supervised process (QoS 1, persistent session, PUBACK after commit, bounded queue).
- ``acl``: the Mosquitto password and ACL files that bind each meter to its own topics.

docs/PROTOCOLS.md (## MQTT) describes the whole door.
"""
