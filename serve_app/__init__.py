"""raydiffusion: Stable Diffusion on Ray Serve (README.md, "Layout")."""

from serve_app.core import quiet_logs

# Before anything imports diffusers or Serve batches: see serve_app/core/quiet_logs.py.
quiet_logs.install()
