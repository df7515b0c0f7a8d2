"""What the API and the engine share, without HTTP: image specs and results, request parameters,
typed errors, content policy, caller images, outbound URL rules. Imports only ``config``."""
