"""Replicate's async predictions API over our jobs."""
