# agent-identity-operator image: the operator and its dependencies in a virtualenv, nothing else.
#
#   docker build -t agent-identity-operator:0.1.0 .
#
# Stage 1 builds a wheel of this repository and installs it (with its dependencies, all of which
# ship binary wheels) into /opt/venv. Stage 2 is the same slim Python image with only that venv
# copied in: no compiler, no pip, no sources, running as the non-root user 65532. The Helm chart
# (charts/agent-identity-operator) runs it with a read-only root filesystem and /tmp as an emptyDir.

ARG PYTHON_IMAGE=python:3.11-slim
# The builder stage may use a different image with the same Python, e.g. one that carries a
# wheelhouse for offline builds (scripts/kind/python-base-image.sh); defaults to PYTHON_IMAGE.
ARG BUILDER_IMAGE=${PYTHON_IMAGE}

FROM ${BUILDER_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Only what the wheel needs (see .dockerignore): the package metadata and the operator package.
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install /wheels/agent_identity_operator-*.whl \
 && /opt/venv/bin/pip uninstall --yes pip \
 && /opt/venv/bin/agent-identity-operator --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="agent-identity-operator" \
      org.opencontainers.image.description="Just-in-time Kubernetes identities for AI agents" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base image's own installers are not needed at run time. The user 65532 gets a name: kopf
# asks for the account's name at start (getpass), which fails for a UID with no passwd entry; USER
# below answers it first, also when a platform runs the image as another UID.
RUN (python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel >/dev/null 2>&1 || true) \
 && echo 'nonroot:x:65532:65532:agent-identity-operator:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'nonroot:x:65532:' >> /etc/group
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp \
    USER=nonroot
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["agent-identity-operator"]
