"""Accepted requests as stored jobs: records, the runner, adoption, positions, previews, the job log."""
