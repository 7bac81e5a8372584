"""Writes: API keys, meters, readings (single and batch). Import from the submodules."""
