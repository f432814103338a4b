# The cutover gateway. README.md, "Container image", has the commands: build (BASE_IMAGE, extra CA
# certificates, the network pip needs), run (read-only root, tmpfs, the state volume, your own config).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# A virtual environment, not the base's Python: Debian's own python3 refuses `pip install` outside one
# (PEP 668), and python:3.11-slim's is better left as it came.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# Extra CA certificates, for a TLS-intercepting proxy: every docker/certs/*.crt joins the system trust
# store, which pip is pointed at below and which the gateway's upstream connections use at run time.
COPY docker/certs/ /usr/local/share/ca-certificates/cutover/
RUN set -eu; \
    if ls /usr/local/share/ca-certificates/cutover/*.crt >/dev/null 2>&1; then update-ca-certificates; fi; \
    python3 -m venv /opt/venv

# The dependencies (and the build backend), read from pyproject.toml alone: editing the sources does not
# download them again.
COPY pyproject.toml /tmp/cutover/pyproject.toml
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/cutover/pyproject.toml', 'rb')); \
print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" > /tmp/cutover/requirements.txt \
    && PIP_CERT=/etc/ssl/certs/ca-certificates.crt pip install -r /tmp/cutover/requirements.txt \
    && rm -rf /tmp/cutover

WORKDIR /app
COPY pyproject.toml README.md ./
# Every package of pyproject.toml's include list (tests/test_dockerfile.py keeps the two in step).
COPY gateway ./gateway
COPY migration ./migration
COPY planner ./planner
COPY routing ./routing
COPY providers ./providers
COPY metering ./metering
COPY store ./store
COPY telemetry ./telemetry
COPY config ./config
COPY simulator ./simulator
# Offline, as everything it needs is installed above; what setuptools leaves in the tree (build/, *.egg-info)
# is removed in the same layer, so it never reaches the image.
RUN pip install --no-index --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info \
    && useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin cutover \
    && mkdir /data && chown 10001:10001 /data

# The demo's migration state goes to /data (config/demo.yaml reads CUTOVER_STATE_DIR), the one place the
# user may write: mount a volume there to keep it, and the root filesystem can be read-only.
ENV CUTOVER_CONFIG_FILE=/app/config/demo.yaml \
    CUTOVER_HOST=0.0.0.0 \
    CUTOVER_PORT=8080 \
    CUTOVER_STATE_DIR=/data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080
# Liveness on the port the server was told; readiness (a store it cannot write, upstream pools) is /readyz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CUTOVER_PORT', '8080') + '/healthz', timeout=2)"]

# A shell only to read the variables above (and CUTOVER_WORKERS, unset: the config's server.workers);
# exec hands PID 1 to cutover, which gets the SIGTERM.
CMD ["sh", "-c", "exec cutover serve --config \"$CUTOVER_CONFIG_FILE\" --host \"$CUTOVER_HOST\" --port \"$CUTOVER_PORT\" ${CUTOVER_WORKERS:+--workers \"$CUTOVER_WORKERS\"}"]
