# phaselens sidecar image. Build: docker build -t ghcr.io/phaselens/phaselens:0.1.0 .
# BASE is any Debian bookworm image with python3 (3.11) and python3-venv; scripts/docker-smoke.sh
# builds with a base made by debootstrap from Debian's packages, where no image registry is reachable.
ARG BASE=python:3.11.11-slim-bookworm
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
COPY parsers ./parsers
COPY analyzers ./analyzers
COPY exporters ./exporters
RUN python3 -m venv /opt/phaselens \
 && /opt/phaselens/bin/pip install --no-cache-dir --quiet --disable-pip-version-check --upgrade pip \
 && /opt/phaselens/bin/pip install --no-cache-dir --quiet --disable-pip-version-check .

FROM ${BASE}
COPY --from=build /opt/phaselens /opt/phaselens
# Fixed numeric uid/gid so Kubernetes runAsNonRoot can verify it without reading /etc/passwd.
# (Not --system: useradd warns about a system uid above 999.)
RUN groupadd --gid 10001 phaselens \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin phaselens
ENV PATH=/opt/phaselens/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 9469
ENTRYPOINT ["phaselens", "run"]
