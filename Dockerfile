# GPU image: CUDA 13 runtime with cuDNN (matching PyPI's torch and cuml-cu13 wheels).
#   docker compose build && docker compose run --rm histocluster make run
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    KEDRO_DISABLE_TELEMETRY=1 \
    DO_NOT_TRACK=1 \
    DVC_NO_ANALYTICS=1 \
    TORCH_HOME=/models/torch \
    CELLPOSE_LOCAL_MODELS_PATH=/models/cellpose \
    KEDRO_ENV=gpu

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential git make \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY src/histocluster/__init__.py src/histocluster/__init__.py
COPY docker/install.sh docker/install.sh
RUN docker/install.sh
COPY . .
# Mark the environment as set up for `make run` (see Makefile; `make test` adds the dev tools).
RUN pip install --no-deps -e . && touch /opt/venv/.installed

# The image's environment is the project's: make targets use it directly. KEDRO_ENV=gpu
# (above) makes every `kedro run` in the image use conf/gpu (Cellpose-SAM, ResNet-50, cuML).
ENV VENV=/opt/venv
CMD ["kedro", "run"]
