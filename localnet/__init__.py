"""A local Solana chain: LiteSVM behind a JSON-RPC server (``python manage.py localnet``, docs/LOCALNET.md)."""
