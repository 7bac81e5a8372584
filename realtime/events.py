"""The one place events leave the system. Filled in by the pipeline and realtime work."""
