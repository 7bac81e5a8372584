"""Matching's services: consumers and allocations (``consumers``), the matcher (``matcher``)."""
