"""Wire-shape fixtures for the meter fleets GridToken must ingest (test data only, no parsers).

Each ``*_JSON`` constant is JSON text laid out for reading; ``wire_bytes()`` turns it back into the exact bytes the
named sender puts on the wire (key order and float spelling survive a ``json`` round trip, e.g. ``0.0`` stays
``0.0``). Sources are public repositories (NakaSato/gridtokenx-*) and vendor / standards docs; every energy field is
annotated with its unit. Values are invented but consistent with each other.

GridTokenX semantics found (items 1-3 of the research brief):

* Simulator -> gateway (``backend/src/smart_meter_simulator/models/reading.py`` ``to_submission_payload`` +
  ``transport/http.py``): one flat JSON object per 15-min reading, energies in kWh as JSON numbers rounded to 6 dp,
  power in kW (3 dp). ``kwh = max(0, surplus_energy)`` where ``surplus = max(0, generated - consumed)`` and
  ``deficit = max(0, consumed - generated)``; ``user_id`` and ``wallet_address`` are both the meter id (NOT a
  Solana address, NOT a UUID); ``reading_id = f"{meter_id}-{sequence_number}"``; ``interval_seconds`` = 900 by
  default; ``timestamp`` = Python ``datetime.isoformat()`` (``+00:00`` offset when tz-aware, microseconds only when
  non-zero). The sender drops readings with ``surplus_energy <= 0`` before posting (single and batch). Headers:
  ``Content-Type: application/json`` and ``Authorization: Bearer <API_KEY>``. Paths by era: ``/api/meters/submit-
  reading``; then ``POST /api/v1/meters/{serial}/readings`` + ``POST /api/v1/public/meters/batch/readings`` (batch
  body ``{"readings": [...]}``, public = no auth); latest ``/v1/ingest/telemetry`` and ``/v1/ingest/telemetry/batch``
  on the aggregator bridge (port 4030 in dev).
* Older "monitoring" mode (``src/smart_meter_simulator/models/reading.py`` ``to_grid_monitoring_payload``): adds
  ``meter_id``, ``thd_*`` (%), ``zone_id``, lat/lon, ``battery_level`` (%), timestamp ``%Y-%m-%dT%H:%M:%SZ``, and
  ``kwh`` = GROSS ``energy_generated`` (not surplus!). The "full" mode sends signed ``kwh = surplus - deficit``.
* Gateway (gridtokenx-apigateway ``src/services/validation/oracle_validator.rs``, ``handlers/auth/meters/reading.rs``):
  ``kwh < 0`` -> rejected ("Negative energy generation", still HTTP 200 with ``minted: false``); ``kwh > 1000`` ->
  rejected; ``surplus_energy > 0 and deficit_energy > 0`` together -> rejected; ``kwh == 0`` -> stored, never minted.
  Positive kwh accumulates per meter until ``mint_threshold`` then mints. Batch reply
  ``{"success_count", "failed_count", "message"}``; a batch item needs ``meter_serial`` or ``meter_id``.
* Aggregator bridge (gridtokenx-aggregator-bridge ``crates/aggregator-api/src/handlers.rs``): ``POST
  /v1/private-network/ingest`` body ``{"protocol": "dlms"|"dlms-enc"|"simulator", "device_id", "payload": {...}}``,
  header ``X-API-KEY``. OBIS energies are Wh (``1.1.1.8.0.255`` import = consumed, ``1.1.2.8.0.255`` export =
  generated; the simulator sends the INTERVAL energy under these total-register codes, not a cumulative count).
  Ed25519 over ``f"{device_id}:{v}:{timestamp_ms}"`` (then ``timestamp_ms // 1000``, then JSON minus ``signature``)
  where ``v`` = Rust ``f64::to_string`` of the first of ``kwh``, ``energy_consumed``, ``energy_generated``,
  import Wh/1000, export Wh/1000 (``1.0`` -> ``"1"``, no exponent); signature base58; pubkey hex at Redis
  ``gridtokenx:devices:{id}:pubkey``. The simulator signs net ``generated - consumed`` (can be negative) and sends
  whole-second UTC timestamps. Single reply 202 ``{"status": "accepted", "reading_id", "device_type":
  "smart_meter", "stream": "gridtokenx:events:v1"}``; bad sig 403, verify error 401. Batch ``/ingest/batch`` body
  ``{"protocol", "readings": [{..., "device_id"}]}`` -> 200 with a list of those objects; bad-signature items are
  silently skipped. Replay guard only for ``dlms-enc`` (AES-256-GCM, AAD ``"{device_id}:{counter}"``, counter must
  strictly increase, else 409); plaintext frames rely on settlement dedup.
* Settlement (``crates/aggregator-logic/src/aggregator.rs``): window start = reading timestamp (meter clock, UTC)
  floored to :00/:15/:30/:45, seconds zeroed; end = start + 15 min (start-stamped, half-open). Per (meter, window)
  sum generated and consumed; a window completes when the meter's highest seen timestamp >= end + grace
  (``BILLING_FLUSH_GRACE_SECS`` default 120 s), or after grace of wall-clock silence once end <= now. Mint amount =
  ``generated - consumed`` when > 0 (net surplus only); late readings for a settled window are dropped from billing.
  Idempotency key ``mint:{serial}:{window_start_ms}``; on chain ``mint_generation(meter_id: [u8;16] (meter UUID),
  window_start_ms: i64, amount: u64)`` requires ``window_start_ms % 900_000 == 0``, ``> 0``, ``<= now + 900 s``,
  ``amount > 0``, PDA ``["gen_mint", meter_id, window_start_ms.to_le_bytes()]``.
"""

import json

# Sim fleet key derivation (transport/aggregator_bridge.py MeterKey): Ed25519 seed = sha256(f"gridtokenx-sim:{id}").
SIM_PUBKEY_HEX = {
    "MTR-0042": "4a4cbd9a3ba82901d6a37d5e9603dd9bebe4ad1e7ce9e28ad158b039739c04cc",
    "MTR-0043": "dcaae42f74b1c2d89aee2619b9f524b641c43324a1198bf427339db8476f0c9a",
}
SIGNED_CANONICAL = "MTR-0042:0.85:1768903650000"  # 2026-01-20T10:07:30Z in ms
SIGNED_CANONICAL_SECONDS = "MTR-0042:0.85:1768903650"  # legacy second-scale form, same key
SIGNATURE_SECONDS_FORM = "2UYZR4z8M8anMv6ErHdBcAoP1DnB45SJQehbahkzNggQpo71WzwmizEVWvRCSwaVdTZB2XNRt7YavpR5LYbuVtHY"


def wire_bytes(text: str, *, compact: bool = False) -> bytes:
    """Bytes a sender emits for ``text``: aiohttp uses ``json.dumps`` defaults; httpx >= 0.28 is compact."""
    value = json.loads(text)
    if compact:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return json.dumps(value).encode()


# --- 1a. Simulator single reading ------------------------------------------------------------------------------
# backend/src/smart_meter_simulator/models/reading.py (EnergyReading.to_submission_payload), sent by
# backend/src/smart_meter_simulator/transport/http.py. Energies kWh, power kW, voltage V, current A, kvar,
# frequency Hz, temperature degC, battery_level kWh (stored energy), nodal_price GXT/kWh, carbon_intensity gCO2/kWh.
SIMULATOR_READING_JSON = """{
  "kwh": 0.85,
  "timestamp": "2026-01-20T10:07:30+00:00",
  "meter_signature": null,
  "meter_serial": "MTR-0042",
  "user_id": "MTR-0042",
  "wallet_address": "MTR-0042",
  "reading_id": "MTR-0042-17",
  "interval_seconds": 900,
  "energy_generated": 1.25,
  "energy_consumed": 0.4,
  "surplus_energy": 0.85,
  "deficit_energy": 0.0,
  "power_generated": 5.0,
  "power_consumed": 1.6,
  "voltage": 231.42,
  "current": 7.215,
  "reactive_power_kvar": 0.312,
  "power_factor": 0.9712,
  "frequency": 50.012,
  "temperature": 31.5,
  "battery_level": 0.0,
  "nodal_price": 0.5,
  "carbon_intensity": 0.0
}"""
SIMULATOR_READING_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer test-api-key"}
SIMULATOR_READING_PATHS = (
    "/api/meters/submit-reading",  # oldest config (class constants)
    "/api/v1/meters/MTR-0042/readings",  # gateway v1 (src/.../transport/http.py era)
    "/v1/ingest/telemetry",  # latest SimulatorConfig.submit_reading_endpoint (aggregator bridge)
)

# --- 1b. Simulator "monitoring" payload --------------------------------------------------------------------------
# src/smart_meter_simulator/models/reading.py (to_grid_monitoring_payload), POSTed by
# src/smart_meter_simulator/transport/http.py to /api/v1/meters/{meter_serial}/readings. kwh = gross generation
# (kWh), energies kWh, power kW, thd_* %, battery_level % (0-100). Zero-kwh readings are not sent in this mode.
SIMULATOR_MONITORING_JSON = """{
  "meter_serial": "MTR-0042",
  "meter_id": "MTR-0042",
  "kwh": 1.25,
  "timestamp": "2025-12-01T03:15:00Z",
  "energy_generated": 1.25,
  "energy_consumed": 0.4,
  "power_generated": 5.0,
  "power_consumed": 1.6,
  "voltage": 231.4,
  "current": 7.2,
  "frequency": 50.0,
  "power_factor": 0.97,
  "thd_voltage": 2.1,
  "thd_current": 4.8,
  "zone_id": 2,
  "latitude": 13.758252,
  "longitude": 100.687455,
  "battery_level": 0.0
}"""

# --- 1c. Simulator batch transport ----------------------------------------------------------------------------
# backend/src/smart_meter_simulator/transport/http.py send_batch: {"readings": [to_submission_payload(), ...]} with
# surplus_energy <= 0 readings filtered out; POST /v1/ingest/telemetry/batch (latest) or, in the v1 gateway era,
# /api/v1/public/meters/batch/readings (no auth). Units as in 1a.
_SECOND = json.loads(SIMULATOR_READING_JSON) | {
    "kwh": 2.1,
    "meter_serial": "MTR-0044",
    "user_id": "MTR-0044",
    "wallet_address": "MTR-0044",
    "reading_id": "MTR-0044-17",
    "energy_generated": 2.5,
    "surplus_energy": 2.1,
    "power_generated": 10.0,
    "voltage": 232.07,
    "current": 9.84,
    "reactive_power_kvar": -0.105,
    "power_factor": 0.9955,
    "temperature": 32.0,
    "battery_level": 4.2,
}
SIMULATOR_BATCH_JSON = json.dumps({"readings": [json.loads(SIMULATOR_READING_JSON), _SECOND]}, indent=2)
GATEWAY_BATCH_RESPONSE_JSON = (
    """{"success_count": 2, "failed_count": 0, "message": "Processed 2 readings (0 failed)"}"""
)

# --- 2. Aggregator bridge DLMS/COSEM frames ----------------------------------------------------------------------
# backend/src/smart_meter_simulator/transport/aggregator_bridge.py (_build_obis_payload, AggregatorBridgeClient)
# -> gridtokenx-aggregator-bridge POST /v1/private-network/ingest. OBIS energies Wh (interval), kwh/energy_* kWh,
# reactive 1.1.3.8.0.255 varh, 1.1.16.7.0.255 signed net import power kW, 0.0.96.14.0.255 tariff (1 peak, 2 off),
# voltage V, current A, frequency Hz. Signature = base58 Ed25519 over SIGNED_CANONICAL with the MTR-0042 sim key.
BRIDGE_INGEST_HEADERS = {"Content-Type": "application/json", "X-API-KEY": "test-api-key"}
BRIDGE_DLMS_INGEST_JSON = """{
  "protocol": "dlms",
  "device_id": "MTR-0042",
  "payload": {
    "1.1.1.8.0.255": 400.0,
    "1.1.2.8.0.255": 1250.0,
    "kwh": 0.85,
    "energy_generated": 1.25,
    "energy_consumed": 0.4,
    "timestamp": "2026-01-20T10:07:30+00:00",
    "signature": "5xMG4GLPiZwr1qiYupdmBbvrKqVHi6GqgfqnRAh1FPRv7da4skPcS2WYed32ZSYvUkx8LhnLmT1AkhSGzPV4HA7t",
    "1.1.32.7.0.255": 231.42,
    "1.1.31.7.0.255": 7.215,
    "1.1.14.7.0.255": 50.012,
    "1.1.13.7.0.255": 0.9712,
    "1.1.3.8.0.255": 78.0,
    "1.1.16.7.0.255": -3.4,
    "1.1.1.8.1.255": 400.0,
    "1.1.2.8.1.255": 1250.0,
    "0.0.96.14.0.255": 1,
    "zone_code": "2"
  }
}"""
# crates/aggregator-api/src/handlers.rs ingest_private_network_batch: items carry their own device_id (or meter_id /
# meter_serial). Second item is a net-import interval: signed value "-0.35" (kWh), canonical
# "MTR-0043:-0.35:1768903650000" with the MTR-0043 sim key.
_BATCH_ITEM_2 = {
    "1.1.1.8.0.255": 450.0,
    "1.1.2.8.0.255": 100.0,
    "kwh": -0.35,
    "energy_generated": 0.1,
    "energy_consumed": 0.45,
    "timestamp": "2026-01-20T10:07:30+00:00",
    "signature": "SxSrzoEZC3cDV9KCYtZw3VdS3zFTF1TVBfGmhGWFxmLfPcnw8CNFL4U1VHhgskpPUz58vp4Cjx1m69wJAoKcyce",
    "1.1.16.7.0.255": 1.4,
    "1.1.1.8.1.255": 450.0,
    "1.1.2.8.1.255": 100.0,
    "0.0.96.14.0.255": 1,
    "zone_code": "2",
    "device_id": "MTR-0043",
}
BRIDGE_DLMS_BATCH_JSON = json.dumps(
    {
        "protocol": "dlms",
        "readings": [json.loads(BRIDGE_DLMS_INGEST_JSON)["payload"] | {"device_id": "MTR-0042"}, _BATCH_ITEM_2],
    },
    indent=2,
)
# Encrypted single frame (aggregator_bridge.py _encrypt_envelope): counter = per-meter monotonic int (wall-clock us),
# nonce = base64 of 12 random bytes, ciphertext = base64 AES-256-GCM of the sorted compact OBIS JSON; "kid" optional.
BRIDGE_DLMS_ENC_SHAPE_JSON = """{
  "protocol": "dlms-enc",
  "device_id": "MTR-0042",
  "payload": {"enc": {"counter": 1768903650000000, "nonce": "AAECAwQFBgcICQoL", "ciphertext": "<base64>", "kid": 3}}
}"""
BRIDGE_ACCEPTED_JSON = """{
  "status": "accepted",
  "reading_id": "0b7e1c2a-5d4f-4e8a-9c3b-2f1a6d7e8c90",
  "device_type": "smart_meter",
  "stream": "gridtokenx:events:v1"
}"""

# --- 4. Third-party fleets ------------------------------------------------------------------------------------
# Tasmota SML script (docs.evcc.io "Tasmota SML IR-reader"; tasmota.github.io Smart-Meter-Interface): MQTT
# tele/<topic>/SENSOR; the group key is the name on the script's "+1,..." line. Total_in/Total_out kWh (4 dp,
# cumulative registers 1.8.0 / 2.8.0), Power_curr W (signed, negative = export), Meter_Id string.
TASMOTA_SML_TOPIC = "tele/tasmota_5A1B2C/SENSOR"
TASMOTA_SML_SENSOR_JSON = """{
  "Time": "2026-01-20T17:07:30",
  "SML": {"Total_in": 12345.6789, "Total_out": 2345.0123, "Power_curr": -812, "Meter_Id": "0a01454d4800007b6a3c"}
}"""

# Shelly Gen2 Pro 3EM (shelly-api-docs.shelly.cloud gen2 ComponentsAndServices/EMData#status): cumulative Wh.
# total_act = imported, total_act_ret = returned (exported); per phase a_/b_/c_total_act_energy and _ret_energy.
SHELLY_EMDATA_TOPIC = "shellypro3em-a0dd6c9ef474/status/emdata:0"
SHELLY_EMDATA_STATUS_JSON = """{
  "id": 0,
  "a_total_act_energy": 4120.52, "a_fund_act_energy": 4101.1,
  "a_total_act_ret_energy": 905.33, "a_fund_act_ret_energy": 903.2,
  "b_total_act_energy": 3987.04, "b_fund_act_energy": 3970.7,
  "b_total_act_ret_energy": 880.1, "b_fund_act_ret_energy": 878.4,
  "c_total_act_energy": 4311.9, "c_fund_act_energy": 4290.0,
  "c_total_act_ret_energy": 912.77, "c_fund_act_ret_energy": 910.3,
  "total_act": 12419.46, "fund_act": 12361.8, "total_act_ret": 2698.2, "fund_act_ret": 2691.9
}"""
# Same data as a JSON-RPC notification on <topic_prefix>/events/rpc (ts = unix seconds, float).
SHELLY_EVENTS_RPC_TOPIC = "shellypro3em-a0dd6c9ef474/events/rpc"
SHELLY_NOTIFY_STATUS_JSON = """{
  "src": "shellypro3em-a0dd6c9ef474",
  "dst": "shellypro3em-a0dd6c9ef474/events",
  "method": "NotifyStatus",
  "params": {"ts": 1768928850.42, "emdata:0": {"id": 0, "total_act": 12419.46, "total_act_ret": 2698.2}}
}"""

# SunSpec inverter model 101/103 (SunSpec Information Model spec): WH = lifetime AC energy, acc32 in Wh, scaled by
# WH_SF (sunssf int16): energy_Wh = WH * 10**WH_SF. 0x80000000 / 0x8000 mean "not implemented".
SUNSPEC_MODEL_103 = {"ID": 103, "L": 50, "W": 4210, "W_SF": 0, "WH": 1234567, "WH_SF": 1}  # 12 345 670 Wh

# OCPP 1.6J MeterValues CALL (OCPP 1.6 spec sect. 7.31/7.45): value is a STRING; measurand defaults to
# Energy.Active.Import.Register and unit to "Wh" when omitted; the register is cumulative.
OCPP16_METER_VALUES_JSON = """[2, "19223201", "MeterValues", {
  "connectorId": 1,
  "transactionId": 4711,
  "meterValue": [{"timestamp": "2026-01-20T10:15:00Z", "sampledValue": [
    {"value": "152345", "context": "Sample.Periodic", "format": "Raw",
     "measurand": "Energy.Active.Import.Register", "location": "Outlet", "unit": "Wh"},
    {"value": "7350"}
  ]}]
}]"""
# OCPP 2.0.1 MeterValuesRequest: value is a NUMBER; unit in unitOfMeasure {unit (default "Wh"), multiplier (10^n)}.
OCPP201_METER_VALUES_JSON = """[2, "a7f3c2", "MeterValues", {
  "evseId": 1,
  "meterValue": [{"timestamp": "2026-01-20T10:15:00Z", "sampledValue": [
    {"value": 152.345, "context": "Sample.Periodic", "measurand": "Energy.Active.Import.Register",
     "unitOfMeasure": {"unit": "kWh", "multiplier": 0}}
  ]}]
}]"""

# DLMS/COSEM OBIS (IEC 62056-6-1) as IEC 62056-21 / readout-JSON keys "A-B:C.D.E": 1.8.0 = A+ import total,
# 2.8.0 = A- export total, .1-.4 = tariffs T1-T4; kWh cumulative registers (GridTokenX uses "1.1.1.8.0.255" in Wh).
DLMS_OBIS_READOUT_JSON = """{
  "0-0:96.1.0": "1ESY1160123456",
  "1-0:1.8.0": 12345.678, "1-0:1.8.1": 8123.4, "1-0:1.8.2": 4222.278, "1-0:1.8.3": 0.0, "1-0:1.8.4": 0.0,
  "1-0:2.8.0": 2345.012, "1-0:2.8.1": 1900.0, "1-0:2.8.2": 445.012, "1-0:2.8.3": 0.0, "1-0:2.8.4": 0.0,
  "0-0:1.0.0": "2026-01-20T10:15:00Z"
}"""
