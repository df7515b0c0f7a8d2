"""The HTTP surfaces of the ingress: one folder per API (OpenAI, A1111, predictions, playground)."""
