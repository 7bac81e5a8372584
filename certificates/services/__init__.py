"""Certificate services: devices, issuance, chain operations, lifecycle (see docs/CERTIFICATES.md)."""
