# syntax=docker/dockerfile:1
# backup-sync: Velero's backup sync as a single-shot CronJob worker.
#
#   docker build --build-arg VERSION=0.1.0 -t backup-sync:0.1.0 .     (or: make image)
#
# Two stages on the same pinned slim base: the builder resolves requirements.txt into a venv
# and builds the project's (pure-Python) wheel; the final stage copies the venv and installs
# that wheel without dependencies, compilers or a build backend. The result runs as a fixed
# non-root UID/GID on a read-only root filesystem: nothing is written outside /tmp (mount an
# emptyDir there, as the Helm chart does).

# Keep equal to PYTHON_IMAGE_VERSION in hack/versions.env (a test checks).
ARG PYTHON_VERSION=3.11.14

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The venv gets neither pip nor setuptools: the base image's pip installs into it.
RUN python -m venv --without-pip /opt/venv
# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt /src/requirements.txt
RUN pip --python /opt/venv/bin/python install -r /src/requirements.txt

COPY pyproject.toml setup.cfg README.md /src/
COPY worker /src/worker
# The build backend (setuptools) lives only in pip's isolated build env, not in the venv.
RUN pip wheel --no-deps --wheel-dir /wheels /src


FROM python:${PYTHON_VERSION}-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="backup-sync" \
      org.opencontainers.image.description="Velero's backup sync as a single-shot Kubernetes CronJob worker (S3, GCS, Azure Blob)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:${PYTHON_VERSION}-slim-bookworm"

# A passwd entry for the fixed UID/GID: some libraries look the user up, and HOME=/tmp keeps
# every "~/..." lookup (kubeconfig, AWS/GCP config) inside the one writable place.
RUN groupadd --system --gid 65532 backup-sync \
    && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin backup-sync

COPY --from=builder /opt/venv /opt/venv
# The project's own wheel, without dependencies (they are in the venv) and without build
# tools; pip compiles the bytecode now, as the read-only root filesystem forbids it later.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-deps --no-index /wheels/*.whl \
    && /opt/venv/bin/backup-sync --version

ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["backup-sync"]
