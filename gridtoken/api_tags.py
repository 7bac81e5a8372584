"""Who calls each API operation, and the order /api/docs/ lists them in (read by the settings, which cannot
import the schema module: it imports DRF, which reads the settings)."""

# First matching path prefix -> tag.
TAGS = (
    ("/api/meters/submit-reading", "devices"),
    ("/api/v1/simulator/", "GridTokenX simulator"),
    ("/api/v1/", "GridTokenX gateway"),
    ("/v1/private-network/", "GridTokenX aggregator bridge"),
    ("/api/auth/", "auth"),
    ("/api/meters", "producers: meters and readings"),
    ("/api/certificates/", "certificates"),
    ("/api/matching/", "consumers: 24/7 matching"),
    ("/api/admin/", "operator"),
)
# The order /api/docs/ lists them in: devices first, then producers, certificates, operators.
TAG_ORDER = [
    {"name": "devices", "description": "A meter sends its readings with its device API key (X-API-Key)."},
    {"name": "GridTokenX gateway", "description": "The same readings in the GridTokenX gateway's shapes."},
    {"name": "GridTokenX aggregator bridge", "description": "Readings relayed by an aggregator (fleet key)."},
    {"name": "GridTokenX simulator", "description": "An aggregator registers the meters it relays."},
    {"name": "auth", "description": "A user's API token for the calls below (Authorization: Bearer)."},
    {"name": "producers: meters and readings", "description": "A producer's meters, readings and totals."},
    {"name": "certificates", "description": "Hourly energy attribute certificates: devices, bundles, verification."},
    {"name": "consumers: 24/7 matching", "description": "A consumer's demand matched hour by hour: the 24/7 report."},
    {"name": "operator", "description": "Operators (staff users): minting, holds, certificate decisions."},
    {"name": "operator: API keys", "description": "Operators issue and revoke API keys."},
    {"name": "operator: dead letters", "description": "Messages a door could not store, to replay or discard."},
]
