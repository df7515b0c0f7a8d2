"""Configuration: the typed ``args:`` of a Serve config file. Pydantic only; imports nothing else of ours."""
