"""The MQTT ingester: QoS 1 messages in, readings committed through the batch service, PUBACK after commit.

1. paho's network thread receives a PUBLISH and puts it on a bounded queue; when the queue is full the put
   blocks, which stalls that thread's reads, so the broker holds the rest (and MQTT v5 Receive Maximum caps
   what it sends unacknowledged anyway). Memory stays bounded however slow PostgreSQL is.
2. The main thread takes up to ``MQTT_BATCH_MAX`` messages (or what arrived within ``MQTT_BATCH_MS``), turns
   each into a reading body (``formats``) and calls ``readings_submit_batch`` once for them all, as the
   protocol caller (``Caller.protocol``: the topic, which the broker's ACL guards, names the meter).
3. Each refused message is answered on the error topic with the body REST would give, then every message
   of the batch is PUBACKed in the order received. A crash before the PUBACK means the broker redelivers
   (persistent session: clean_start=False, session expiry), and GridToken's idempotency turns the repeat
   into a duplicate: every message is stored exactly once.
4. A database error is transient: the batch is retried with back-off and nothing is acknowledged meanwhile.
   Any other exception is narrowed to the message that raises it (bisecting the batch), which becomes a dead
   letter (``meters.services.dead_letters``), is answered with ``internal_error`` and acknowledged: no message
   stops the ingester. One that kills the process outright is recognised on redelivery (``process``, step 1)
   and quarantined after MQTT_POISON_MAX_DELIVERIES attempts.
5. SIGTERM stops taking messages, finishes and acknowledges what is queued, disconnects and returns.

A PUBACK is only sent on the connection the message arrived on: after a reconnect the broker resends the
unacknowledged ones (same packet ids), and acknowledging an old id could acknowledge a message not stored.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from django.db import connection
from django.utils import timezone as dj_timezone
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from config.objects import MqttConfig
from gridtoken.exceptions import ApplicationError
from meters import formats
from meters.selectors import Caller
from meters.services import dead_letters
from meters.services.batch import ACCEPTED, DUPLICATE, REJECTED, readings_submit_batch
from protocols import status
from protocols.mqtt import topics
from protocols.mqtt.delivery import Delivery
from protocols.mqtt.poison import TRANSIENT, Door, PoisonIsolation

logger = logging.getLogger("protocols.mqtt")
STATS_EVERY_SECS = 60.0
RETRY_MAX_SECS = 30.0


class Ingester(PoisonIsolation):
    def __init__(self, cfg: MqttConfig, *, client_id: str | None = None) -> None:
        self.cfg = cfg
        self.layouts = topics.layouts(cfg.topics)
        self.error_layout = topics.Layout("errors", cfg.error_topic)
        # Room for every message the broker may have unacknowledged (Receive Maximum, below): the network thread
        # never waits here, and memory is bounded by the broker's flow control.
        self.queue: queue.Queue[Delivery] = queue.Queue(maxsize=self.receive_maximum)
        self.stopping = threading.Event()
        self.subscribed = threading.Event()
        self.connections = 0  # incremented on each CONNACK; a Delivery carries the one it arrived on
        self.connected = False
        self.lag_seconds: float | None = None  # receipt to storing, of the last batch's first message
        self.counts: Counter[str] = Counter()
        self.client_id = client_id or cfg.client_id
        self.client = self._client(self.client_id)

    # --- the network side (paho's thread) -----------------------------------------------------------

    def _client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=True,
        )
        if self.cfg.username is not None:
            client.username_pw_set(self.cfg.username, self.cfg.password)
        if self.cfg.tls:
            client.tls_set(ca_certs=str(self.cfg.ca_file) if self.cfg.ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(self.cfg.reconnect_min_secs, self.cfg.reconnect_max_secs)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Properties:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.cfg.session_expiry_secs
        # What the broker may have sent unacknowledged: the queue plus the batch being stored.
        properties.ReceiveMaximum = self.receive_maximum
        return properties

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.error("mqtt connect refused", extra={"reason": str(reason_code), "broker": self._broker()})
            return
        self.connections += 1
        self.connected = True
        logger.info(
            "mqtt connected",
            extra={"broker": self._broker(), "session_present": flags.session_present, "client_id": self.client_id},
        )
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        client.subscribe([(topics.shared(layout.filter, self.cfg.share_group), options) for layout in self.layouts])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(code) for code in reason_codes if code.is_failure]
        if failed:
            logger.error("mqtt subscription refused", extra={"reasons": failed})
            return
        logger.info("mqtt subscribed", extra={"filters": [layout.filter for layout in self.layouts]})
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = False
        if not self.stopping.is_set():
            logger.warning("mqtt disconnected; reconnecting", extra={"reason": str(reason_code)})

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        delivery = Delivery(
            mid=message.mid,
            qos=message.qos,
            topic=message.topic,
            payload=message.payload,
            received_at=datetime.now(UTC),
            connection=self.connections,
            correlation=getattr(props, "CorrelationData", None),
        )
        # The broker's flow control (Receive Maximum) is the backpressure; blocking here only happens with a broker
        # that ignores it, and then this thread stops reading the socket until there is room.
        while not self.stopping.is_set():
            try:
                self.queue.put(delivery, timeout=0.5)
                return
            except queue.Full:
                continue
        # Stopping: not queued, not acknowledged; the broker keeps it for the next run.

    @property
    def receive_maximum(self) -> int:
        """Unacknowledged messages the broker may send at once: what the queue plus one batch being stored hold."""
        return min(65_535, self.cfg.queue_max + self.cfg.batch_max)

    def _broker(self) -> str:
        return f"{'mqtts' if self.cfg.tls else 'mqtt'}://{self.cfg.host}:{self.cfg.port}"

    # --- the storing side (the caller's thread) -------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()

    def start(self) -> None:
        """Connect in paho's thread, which retries with back-off (MQTT_RECONNECT_MIN/MAX_SECS) until it can."""
        self.client.connect_async(
            self.cfg.host,
            self.cfg.port,
            keepalive=self.cfg.keepalive_secs,
            clean_start=False,
            properties=self._connect_properties(),
        )
        self.client.loop_start()

    def step(self) -> int:
        """Store one batch (waiting up to 0.2 s for its first message); how many messages it held."""
        batch = self._collect()
        if batch:
            self.process(batch)
        return len(batch)

    def close(self) -> None:
        """Disconnect once the acknowledgements already queued are written (paho sends packets in order)."""
        self.client.disconnect()
        self.client.loop_stop()
        status.ingester_stopped(name=self.client_id)

    def heartbeat(self) -> None:
        """Tell /ready and /metrics (through Redis) this ingester is alive, connected or not, and its lag."""
        status.ingester_heartbeat(
            name=self.client_id, connected=self.connected, broker=self._broker(), lag_seconds=self.lag_seconds
        )

    def run(self) -> None:
        """Connect, store batches until ``stop()``, then drain the queue and disconnect."""
        self.start()
        next_stats = time.monotonic() + STATS_EVERY_SECS
        next_heartbeat = 0.0
        try:
            while not (self.stopping.is_set() and self.queue.empty()):
                self.step()
                if time.monotonic() >= next_heartbeat:
                    self.heartbeat()
                    next_heartbeat = time.monotonic() + status.HEARTBEAT_SECS
                if time.monotonic() >= next_stats:
                    self._log_stats()
                    next_stats = time.monotonic() + STATS_EVERY_SECS
        finally:
            self.close()
            self._log_stats()
            logger.info("mqtt ingester stopped")

    def _collect(self) -> list[Delivery]:
        try:
            batch = [self.queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.cfg.batch_ms / 1000
        while len(batch) < self.cfg.batch_max:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def process(self, batch: list[Delivery]) -> None:
        """Store ``batch``, answer its refusals and acknowledge every message (unless stopped while the
        database is down: then nothing is acknowledged and the broker redelivers).

        1. One statement records every message as taken on; a message recorded already was redelivered after
           the ingester handling it died (SIGKILL, the OOM killer): it is suspect.
        2. The others are parsed and stored together; an unexpected exception is narrowed to its message.
        3. Each suspect is attempted alone, or quarantined unprocessed once attempted MQTT_POISON_MAX_DELIVERIES
           times. Alone, so that a message that kills the process takes no other message's attempts with it.
        4. The records are deleted, the refusals answered, and every message acknowledged.
        """
        for delivery in batch:
            delivery.fingerprint = dead_letters.fingerprint(Door.MQTT, delivery.topic, delivery.payload)
        if not self._retrying(lambda: self._begin(batch), len(batch)):
            return
        if not self._retrying(lambda: self._handle([d for d in batch if not d.suspect]), len(batch)):
            return
        for delivery in (d for d in batch if d.suspect):
            if not self._retrying(lambda d=delivery: self._attempt_again(d), len(batch)):
                return
            if delivery.attempts > self.cfg.poison_max_deliveries:
                handled = self._retrying(lambda d=delivery: self._quarantine(d), len(batch))
            else:
                handled = self._retrying(lambda d=delivery: self._handle_alone(d), len(batch))
            if not handled:
                return
        if not self._retrying(lambda: dead_letters.message_attempts_end([d.fingerprint for d in batch]), len(batch)):
            return
        refused: Counter[str] = Counter()
        for delivery in batch:
            self.counts[delivery.outcome] += 1
            if delivery.outcome == REJECTED:
                self.counts[f"rejected:{delivery.error['code']}"] += 1
                refused[delivery.error["code"]] += 1
                self._answer(delivery)
        outcomes = Counter(delivery.outcome for delivery in batch)
        status.ingester_count(
            received=len(batch), stored=outcomes[ACCEPTED], duplicates=outcomes[DUPLICATE], refused=dict(refused)
        )
        self.lag_seconds = (datetime.now(UTC) - batch[0].received_at).total_seconds()
        for delivery in batch:
            if delivery.qos > 0 and delivery.connection == self.connections:
                self.client.ack(delivery.mid, delivery.qos)

    def _handle(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            delivery.body, delivery.outcome, delivery.error = None, "", None
            self._parse(delivery)
        self._store_isolating([d for d in deliveries if d.body is not None])

    def _parse(self, delivery: Delivery) -> None:
        matched = topics.match(self.layouts, delivery.topic)
        if matched is None:
            delivery.outcome = "ignored"
            return
        layout, delivery.serial = matched
        try:
            delivery.body = formats.reading_body(
                layout.format,
                delivery.payload,
                serial=delivery.serial,
                received_at=delivery.received_at,
                timezone=self.cfg.tasmota_timezone,
            )
        except formats.Ignored:
            delivery.outcome = "ignored"
        except ApplicationError as error:
            delivery.outcome, delivery.error = REJECTED, error.as_dict()
        except Exception as error:  # a bug met by this message only
            self._dead_letter(delivery, error)

    def _retrying(self, step, n: int) -> bool:
        """Run ``step`` until it gets through a database outage (back-off); False when stopped meanwhile."""
        delay = 0.5
        while True:
            try:
                step()
                return True
            except TRANSIENT as error:
                logger.warning("mqtt batch not stored; retrying", extra={"error": str(error), "retry_in": delay})
                if not connection.in_atomic_block:
                    connection.close()
            if self.stopping.wait(delay):
                logger.warning("mqtt stopping with a batch not stored; the broker keeps it", extra={"n": n})
                return False
            delay = min(delay * 2, RETRY_MAX_SECS)

    def _store(self, deliveries: list[Delivery]) -> None:
        # One call for the whole batch: the topic named each message's meter (the broker's ACL), so the
        # protocol caller may speak for any registered meter; an unknown serial is that message's refusal.
        answer = readings_submit_batch(
            caller=Caller.protocol(),
            readings=[d.body for d in deliveries],
            now=dj_timezone.now(),
            dead_letter=lambda index, error: self._refusal(deliveries[index], error),
        )
        for delivery, result in zip(deliveries, answer["results"], strict=True):
            delivery.outcome = result["status"]
            delivery.error = result.get("error")

    def _answer(self, delivery: Delivery) -> None:
        """The refusal on the meter's error topic: REST's error body, plus the topic the message came on."""
        if delivery.serial is None:
            return
        body = {"error": delivery.error, "request_id": delivery.request_id, "topic": delivery.topic}
        logger.info("mqtt message refused", extra={"topic": delivery.topic, "code": delivery.error["code"]})
        properties = None
        if delivery.correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = delivery.correlation
        self.client.publish(
            self.error_layout.topic(delivery.serial),
            _json(body),
            qos=1,
            properties=properties,
        )

    def _log_stats(self) -> None:
        logger.info("mqtt ingest counts", extra={"counts": dict(self.counts), "queued": self.queue.qsize()})


def _json(body: dict) -> bytes:
    return json.dumps(body, default=str).encode()
