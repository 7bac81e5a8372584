"""Column sizes the readings' models share (meters.models and the archive's manifest, meters/archive/models.py)."""

# kWh is kept exactly as the meter sent it, to 9 decimal places (the token's own precision).
KWH_DECIMAL_PLACES = 9
KWH_MAX_DIGITS = 18
# Register totals are larger than any one interval: numeric(24, 9) holds a billion MWh.
REGISTER_MAX_DIGITS = 24
# Sums over many readings: kWh to 21 integer digits, base units as integers of up to 40 digits.
SUM_KWH_DIGITS = 30
SUM_UNITS_DIGITS = 40
