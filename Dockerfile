# neo-exporter container image.
#
#   docker build -t neo-exporter .
#   docker run --rm -p 9636:9636 neo-exporter --demo
#   docker run -d -p 9636:9636 -e NEO_API_TOKEN -v neo-exporter-state:/var/lib/neo-exporter neo-exporter
#
# Two stages on the same base image: the first builds the wheel and installs it into a
# virtualenv; the second copies only that virtualenv, so no build tools or sources ship.
# docs/deployment.md has the details.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/neo-exporter \
    && /opt/neo-exporter/bin/pip install --no-cache-dir /wheels/*.whl

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="neo-exporter" \
      org.opencontainers.image.description="Prometheus exporter for ProjectDiscovery Neo's usage API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed UID/GID, so that volume ownership and Kubernetes' runAsUser can rely on it.
RUN groupadd --system --gid 10001 neo \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/neo-exporter --shell /usr/sbin/nologin neo \
    && mkdir -p /var/lib/neo-exporter \
    && chown 10001:10001 /var/lib/neo-exporter

COPY --from=build /opt/neo-exporter /opt/neo-exporter
ENV PATH=/opt/neo-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# state.path defaults to neo-exporter.db relative to the working directory, so the state
# lands in the volume without any configuration.
WORKDIR /var/lib/neo-exporter
VOLUME ["/var/lib/neo-exporter"]
USER 10001:10001
EXPOSE 9636

# No curl in the image: the venv's Python asks /-/healthy. urlopen raises on a non-2xx
# answer or no answer, which exits 1. Listening on another port? Override this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9636/-/healthy', timeout=4)"]

# Exec form: the exporter is PID 1 and gets SIGTERM itself; it handles it and exits 0.
ENTRYPOINT ["neo-exporter"]
