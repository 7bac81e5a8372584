"""Batch minting services: claim, build, commit, send, settle, reconcile (see docs/PIPELINE.md).

One module per step; callers import from the module itself (``from minting.services.automatic import
readings_mint_due``), so importing one step never loads the others.
"""
