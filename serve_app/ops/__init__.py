"""Operating the service: metrics, alerts, the replica watch, request logs, ``make deploy``."""
