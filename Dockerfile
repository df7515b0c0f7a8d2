# The image every node of cluster.yaml runs: Ray's own image plus this project, installed from
# the exact versions in constraints-gpu.txt (CUDA torch and the xformers built for it), so a node
# booted today runs what a node booted last month ran, and no node pip-installs gigabytes at boot.
#   make image     # builds this and pushes it to the ECR repository bootstrap created
# Ray's CPU image, not its -gpu one: torch's CUDA wheels bring every CUDA library torch loads
# (about 3 GB, the nvidia-* lines of constraints-gpu.txt), so the -gpu image's own CUDA toolkit
# would be gigabytes pulled at every cold start and never used. The GPU itself comes from the
# host: the DLAMI's NVIDIA driver and container toolkit, and `--gpus all` (cluster.yaml).
FROM rayproject/ray:2.60.0-py311-cpu

WORKDIR /home/ray/raydiffusion

# The heavy layer first (torch, CUDA libraries, xformers): rebuilt only when the lock changes.
COPY --chown=ray:users constraints-gpu.txt ./
RUN pip install --no-cache-dir -c constraints-gpu.txt torch xformers

COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users serve_app ./serve_app
COPY --chown=ray:users bot_gateway ./bot_gateway
COPY --chown=ray:users bench ./bench
RUN pip install --no-cache-dir -c constraints-gpu.txt '.[gpu]' \
 && python -c "import ray, torch, xformers, diffusers, serve_app.app; \
assert ray.__version__ == '2.60.0', ray.__version__; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

WORKDIR /home/ray
