# The image every Kubeflow Pipelines task of avlops runs on: the project installed from uv.lock, with the system
# packages its stages need (FFmpeg for media, espeak-ng and sox for the synthetic corpus, Java for METEOR, git for
# DVC references). Lightweight components call `python3 -m kfp.dsl.executor_main`, so python3 is this venv's.
#   docker build -f infra/docker/component.Dockerfile -t REGISTRY/avlops:VERSION .
#   avlops pipeline compile --image REGISTRY/avlops:VERSION
FROM python:3.11-slim-bookworm

ARG UV_VERSION=0.13.9
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg sox espeak-ng default-jre-headless git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir "uv==${UV_VERSION}"

WORKDIR /opt/avlops
ENV UV_PROJECT_ENVIRONMENT=/opt/avlops/.venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
# dependencies first: this layer is reused while only the project's code changes
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
COPY configs ./configs
COPY infra/feast ./infra/feast
COPY params.yaml dvc.yaml ./
RUN uv sync --frozen --no-dev --no-editable

ENV PATH=/opt/avlops/.venv/bin:$PATH \
    DVC_NO_ANALYTICS=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# non-root; the shared PVC must be writable by this uid (fsGroup 1000 in the pod's security context)
USER 1000:1000
CMD ["avlops", "--help"]
