"""Cumulative energy registers: reading them from the shapes real meters send, and deriving interval energy.

A register read carries running totals, not deltas. Two registers matter for minting, per meter:

- **import** (A+, energy taken from the grid): OBIS 1.8.0 (or the sum of tariff registers 1.8.1-1.8.4), Tasmota
  SML ``Total_in`` (kWh), Shelly ``total_act`` / ``total_act_energy`` (Wh), OCPP
  ``Energy.Active.Import.Register`` (Wh unless ``unit`` says kWh);
- **export** (A-, energy delivered to the grid, or an inverter's lifetime production): OBIS 2.8.0 (or 2.8.1-2.8.4),
  ``Total_out`` (kWh), Shelly ``total_act_ret`` / ``total_act_ret_energy`` (Wh), SunSpec ``WH`` scaled by
  ``WH_SF`` (Wh), OCPP ``Energy.Active.Export.Register``.

``derive`` turns a read and the read before it (in timestamp order, of the same meter and baseline) into the
interval's energy, exactly: a decrease is a rollover at the meter's declared register size, or else a reset
(meter swapped, register cleared), which starts a new baseline and never mints a negative or a jump.

Partial reads. A read may leave out a register (Shelly's ``NotifyStatus`` omits unchanged attributes); ``overlay``
fills it from the previous read, whose stored totals are the meter's last known state. A register is never
derived from one the previous read did not have: such a read is a baseline (nothing is known of the interval).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from gridtoken.exceptions import ValidationFailed
from meters.models import KWH_DECIMAL_PLACES, REGISTER_MAX_DIGITS
from meters.numbers import decimal_places, read_integer, read_number, shift

REGISTER_LIMIT = Decimal(10) ** (REGISTER_MAX_DIGITS - KWH_DECIMAL_PLACES)
KWH_QUANTUM = Decimal(1).scaleb(-KWH_DECIMAL_PLACES)
IMPORT, EXPORT = "import", "export"
# "1.8.0", "1-0:1.8.0", "1-0:1.8.0*255", "1.8.0.255", GridTokenX's "1.1.1.8.0.255": C.D.E name the register.
_OBIS = re.compile(r"^(?:\d+-\d+:|\d+\.\d+\.)?([12])\.8\.([0-4])(?:[*.]\d+)?$")
_NAMED = {  # field name -> (register, unit)
    "Total_in": (IMPORT, "kWh"),
    "Total_out": (EXPORT, "kWh"),
    "total_act": (IMPORT, "Wh"),
    "total_act_ret": (EXPORT, "Wh"),
    "total_act_energy": (IMPORT, "Wh"),
    "total_act_ret_energy": (EXPORT, "Wh"),
    "Energy.Active.Import.Register": (IMPORT, "Wh"),
    "Energy.Active.Export.Register": (EXPORT, "Wh"),
}


@dataclass(frozen=True, slots=True)
class Registers:
    """A read's register totals in kWh (None when the meter did not send that register)."""

    import_kwh: Decimal | None
    export_kwh: Decimal | None


@dataclass(frozen=True, slots=True)
class Delta:
    """The energy of the interval between two reads of one meter, and what happened to the registers."""

    imported: Decimal
    exported: Decimal
    flags: tuple[str, ...] = ()

    @property
    def net(self) -> Decimal:
        return self.exported - self.imported


def _invalid(message: str, name: str) -> ValidationFailed:
    return ValidationFailed("invalid_register", message, field=name)


def _value(value: object, name: str, unit: str, scale: int = 0) -> Decimal:
    """A register total in kWh, exact: non-negative, below the column's limit, at most 9 decimals in kWh.
    Scaled by moving the exponent (``shift``), so nothing is rounded on the way."""
    amount = read_number(value, name, signed=False, strings=True, code="invalid_register")
    kwh = shift(amount, scale - 3 if unit == "Wh" else scale)
    if kwh >= REGISTER_LIMIT:
        raise _invalid(f"A register value must stay below {REGISTER_LIMIT} kWh.", name)
    if decimal_places(kwh) > KWH_DECIMAL_PLACES:
        raise _invalid("A register value has more precision than a milli-Wh.", name)
    return kwh.quantize(KWH_QUANTUM)


def _scale(value: object, name: str) -> int:
    return read_integer(value, name, minimum=-10, maximum=10, code="invalid_register")


def _unit(data: dict, key: str, default: str) -> str:
    unit = data.get(key, default)
    if unit not in ("Wh", "kWh"):
        raise _invalid('The unit must be "Wh" or "kWh".', key)
    return unit


def _sum(values: list[Decimal], name: str) -> Decimal | None:
    """Tariff registers' total (exact: each is below 10^15 with 9 places), below the column's limit too."""
    if not values:
        return None
    total = sum(values, Decimal(0))
    if total >= REGISTER_LIMIT:
        raise _invalid(f"The tariff registers' sum must stay below {REGISTER_LIMIT} kWh.", name)
    return total


def _from_obis(registers: object, unit: str) -> Registers:
    if not isinstance(registers, dict) or not registers or len(registers) > 32:
        raise _invalid('registers must be an object of OBIS code -> total (e.g. {"1.8.0": 1234.5}).', "registers")
    totals: dict[str, Decimal] = {}
    tariffs: dict[str, list[Decimal]] = {IMPORT: [], EXPORT: []}
    for code, value in registers.items():
        match = _OBIS.match(code) if isinstance(code, str) else None
        if match is None:
            continue  # other OBIS objects (voltage, power, ...) are not energy registers
        register = IMPORT if match.group(1) == "1" else EXPORT
        amount = _value(value, f"registers.{code}", unit)
        if match.group(2) == "0":
            totals[register] = amount
        else:
            tariffs[register].append(amount)
    found = Registers(
        totals[IMPORT] if IMPORT in totals else _sum(tariffs[IMPORT], "registers"),
        totals[EXPORT] if EXPORT in totals else _sum(tariffs[EXPORT], "registers"),
    )
    if found.import_kwh is None and found.export_kwh is None:
        raise _invalid("registers names no energy register (1.8.x or 2.8.x).", "registers")
    return found


def _named(data: dict) -> dict[str, Decimal]:
    found: dict[str, Decimal] = {}
    for name, (register, unit) in _NAMED.items():
        if data.get(name) is not None:
            found[register] = _value(data[name], name, _unit(data, "unit", unit) if "Register" in name else unit)
    if data.get("WH") is not None:  # SunSpec: lifetime production in Wh, times 10^WH_SF
        found[EXPORT] = _value(data["WH"], "WH", "Wh", _scale(data.get("WH_SF", 0), "WH_SF"))
    return found


def _sampled(values: object) -> dict[str, Decimal]:
    """OCPP ``sampledValue``: [{"measurand": "Energy.Active.Import.Register", "value": "1234", "unit": "Wh"}]."""
    if not isinstance(values, list) or len(values) > 64:
        raise _invalid("sampledValue must be a list of OCPP sampled values.", "sampledValue")
    found: dict[str, Decimal] = {}
    for sample in values:
        if isinstance(sample, dict) and sample.get("measurand") in _NAMED and sample.get("value") is not None:
            register, unit = _NAMED[sample["measurand"]]
            measure = sample.get("unitOfMeasure")  # OCPP 2.0.1: {"unit": "kWh", "multiplier": 0}
            if isinstance(measure, dict):
                scale = _scale(measure.get("multiplier", 0), "sampledValue.unitOfMeasure.multiplier")
                found[register] = _value(sample["value"], "sampledValue", _unit(measure, "unit", unit), scale)
            else:
                found[register] = _value(sample["value"], "sampledValue", _unit(sample, "unit", unit))
    return found


def registers_from_body(data: dict) -> Registers | None:
    """The register totals a reading body carries, or None when it carries none (an interval reading).

    Looked for at the top level and, as Tasmota and Shelly nest them (``{"SML": {"Total_in": ...}}``,
    ``{"emdata:0": {"total_act": ...}}``), in one level of nested objects.
    """
    if data.get("registers") is not None:
        return _from_obis(data["registers"], _unit(data, "register_unit", "kWh"))
    found = _named(data)
    if data.get("sampledValue") is not None:
        found.update(_sampled(data["sampledValue"]))
    if not found:
        for value in data.values():
            if isinstance(value, dict) and not found:
                found = _named(value)
    if not found:
        return None
    return Registers(found.get(IMPORT), found.get(EXPORT))


def overlay(read: Registers, previous: Registers | None) -> Registers:
    """``read`` with each register it left out taken from ``previous`` (the register did not move)."""
    if previous is None:
        return read
    return Registers(
        previous.import_kwh if read.import_kwh is None else read.import_kwh,
        previous.export_kwh if read.export_kwh is None else read.export_kwh,
    )


def derive(read: Registers, previous: Registers | None, *, rollover_kwh: Decimal | None) -> Delta:
    """The interval's energy from ``previous`` to ``read``; None previous (a first read, a new baseline) is 0,
    and so is a read with a register ``previous`` lacked: its energy since then is unknown, never read as 0."""
    appeared = previous is not None and (
        (read.import_kwh is not None and previous.import_kwh is None)
        or (read.export_kwh is not None and previous.export_kwh is None)
    )
    if previous is None or appeared:
        return Delta(Decimal(0), Decimal(0), ("register_baseline",))
    flags: list[str] = []
    imported = _step(read.import_kwh, previous.import_kwh, rollover_kwh, flags)
    exported = _step(read.export_kwh, previous.export_kwh, rollover_kwh, flags)
    return Delta(imported, exported, tuple(dict.fromkeys(flags)))


def _step(now: Decimal | None, before: Decimal | None, rollover_kwh: Decimal | None, flags: list[str]) -> Decimal:
    if now is None or before is None:
        return Decimal(0)
    if now >= before:
        return now - before
    if rollover_kwh is not None and before < rollover_kwh and now < rollover_kwh:
        wrapped = rollover_kwh - before + now
        if wrapped < rollover_kwh / 2:  # a wrap past the top; a drop to near zero from mid-range is a reset
            flags.append("register_rollover")
            return wrapped
    flags.append("register_reset")  # replaced, cleared or corrupt: a new baseline, nothing minted across it
    return Decimal(0)
