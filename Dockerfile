# syntax=docker/dockerfile:1
# vllm-scaler: KEDA external scaler for vLLM.
#   docker build -t vllm-scaler:0.1.0 .
#   docker run --rm -p 6000:6000 -p 8080:8080 vllm-scaler:0.1.0 serve --help
# Two stages: the first installs the package into a virtual environment with the same `pip install .` the
# README uses; the second copies only that environment onto a clean slim base and runs it as a non-root user.
# No protobuf generation step: the gRPC stubs in scaler/_proto/ are committed, and
# tests/unit/test_proto_stubs.py fails when they differ from what proto/externalscaler.proto generates.
# tests/deploy/test_image_install.py repeats this file's COPY lines and install command in a clean virtual
# environment, so the build steps are tested without a Docker engine.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/vllm-scaler
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY proto ./proto
COPY scaler ./scaler
COPY simulations ./simulations
RUN /opt/vllm-scaler/bin/pip install .

FROM ${PYTHON_IMAGE}
# A fixed numeric UID/GID so Kubernetes' runAsNonRoot can verify it (deploy/base runs it as 10001).
RUN groupadd --system --gid 10001 scaler \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin scaler
COPY --from=build /opt/vllm-scaler /opt/vllm-scaler
ENV PATH=/opt/vllm-scaler/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# 6000: gRPC (KEDA's ExternalScaler, grpc.health.v1, reflection); 8080: HTTP /metrics for Prometheus.
EXPOSE 6000 8080
ENTRYPOINT ["vllm-scaler"]
CMD ["serve"]
