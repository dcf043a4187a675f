# syntax=docker/dockerfile:1
# The FraudDemo image: the runtime (syncers, points of sale, detector) and the operator, all behind the
# `frauddemo` entry point. The operator's pods run it as UID 10001 with a read-only root file system
# and a writable /tmp. Build: docker build -t frauddemo:0.1.0 .

# A slim Python, pinned by version (the same minor version the test suite runs on).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
# Every dependency comes as a wheel (--only-binary), so no compiler is needed here or anywhere else.
# The dependencies first, from pyproject.toml alone: a change to the code or the README reuses this layer.
RUN python -m venv /opt/frauddemo \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    > /tmp/requirements.txt \
 && /opt/frauddemo/bin/pip install --only-binary=:all: -r /tmp/requirements.txt
COPY README.md ./
COPY workloads ./workloads
COPY operator ./operator
RUN /opt/frauddemo/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/frauddemo/bin/pip install --only-binary=:all: /wheels/*.whl \
 && /opt/frauddemo/bin/python -m compileall -q /opt/frauddemo/lib

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 frauddemo \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin frauddemo
COPY --from=build /opt/frauddemo /opt/frauddemo
ENV PATH=/opt/frauddemo/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so the kubelet can check runAsNonRoot against it.
USER 10001:10001
WORKDIR /tmp
# detector HTTP, operator liveness, syncer metrics
EXPOSE 8080 8081 9100
ENTRYPOINT ["frauddemo"]
CMD ["--help"]
