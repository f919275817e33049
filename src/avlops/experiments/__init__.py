"""Reproducible experiments built from the platform's own stages."""
