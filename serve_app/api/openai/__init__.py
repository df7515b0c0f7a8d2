"""OpenAI's Images API: generations (in ``http_app``), edits and variations, models."""
