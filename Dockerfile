# syntax=docker/dockerfile:1
# The one radmesh image: every service, chosen at run time.
#   docker build -t radmesh:0.1.0 .
#   docker run -e RADMESH_SERVICE=fetcher ... radmesh:0.1.0       (or: radmesh:0.1.0 fetcher)
# Settings come from RADMESH_* variables (README "Configuration"); the image holds no secrets.
# BASE is any Debian-based image with Python 3.11 at /usr/local/bin/python3.11 or
# /usr/bin/python3.11 (python:3.11-slim-bookworm; `make image` builds one with debootstrap
# where no registry image can be pulled, deploy/image/README.md).
ARG BASE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies first, in a layer of their own (from pyproject.toml alone, with empty
# packages and README in place of the code): a change to the code rebuilds only the last steps.
COPY pyproject.toml ./
RUN mkdir -p shared services samples \
 && touch README.md shared/__init__.py services/__init__.py samples/__init__.py \
 && python3.11 -m venv /opt/radmesh \
 && /opt/radmesh/bin/pip install --no-compile --upgrade "pip>=24" \
 && /opt/radmesh/bin/pip install --no-compile . \
 && /opt/radmesh/bin/python -m compileall -q /opt/radmesh/lib \
 && rm -rf shared services samples
COPY README.md ./
COPY shared ./shared
COPY services ./services
COPY samples ./samples
RUN /opt/radmesh/bin/pip install --no-compile --no-deps --force-reinstall . \
 && /opt/radmesh/bin/python -m compileall -q \
      /opt/radmesh/lib/python3.11/site-packages/shared \
      /opt/radmesh/lib/python3.11/site-packages/services \
      /opt/radmesh/lib/python3.11/site-packages/samples

FROM ${BASE} AS runtime
LABEL org.opencontainers.image.title="radmesh" \
      org.opencontainers.image.description="Imaging AI results into the clinical record: FHIR, DICOMweb, OIP v2" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/radmesh/radmesh"
RUN groupadd --system --gid 10001 radmesh \
 && useradd --system --uid 10001 --gid radmesh --home-dir /var/lib/radmesh --shell /usr/sbin/nologin radmesh \
 && mkdir -p /var/lib/radmesh/blobs \
 && chown -R radmesh:radmesh /var/lib/radmesh
COPY --from=build /opt/radmesh /opt/radmesh
COPY registry /etc/radmesh/registry
ENV PATH=/opt/radmesh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RADMESH_REGISTRY_PATH=/etc/radmesh/registry/models.yaml \
    RADMESH_STORAGE__BLOB_DIR=/var/lib/radmesh/blobs \
    RADMESH_TELEMETRY__LOG_FORMAT=json \
    RADMESH_SUBSCRIBER_HOST=0.0.0.0 \
    RADMESH_FETCHER_HOST=0.0.0.0 \
    RADMESH_INFERENCE_HOST=0.0.0.0 \
    RADMESH_MAPPER_HOST=0.0.0.0 \
    RADMESH_NOTIFIER_HOST=0.0.0.0 \
    RADMESH_VERIFICATION_HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/radmesh
# The services' ports (subscriber 8090 and HL7 MLLP 2575, fetcher 8091, inference 8092,
# mapper 8093, notifier 8094, verification 8095); each serves /healthz, /readyz, /metrics.
EXPOSE 8090 8091 8092 8093 8094 8095 2575
HEALTHCHECK --interval=15s --timeout=6s --start-period=30s --retries=3 CMD ["radmesh", "probe"]
# SIGTERM: the service stops consuming, finishes or requeues what it holds, exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["radmesh", "run"]
