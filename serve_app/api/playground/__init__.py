"""The browser playground at ``/``."""
