# cutover gateway. Build: docker build -t cutover .   Run: docker run -p 8080:8080 cutover
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

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
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app cutover

USER cutover
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"

# Mount your own config over /app/config/cutover.yaml or pass --config.
CMD ["cutover", "serve", "--config", "/app/config/demo.yaml", "--host", "0.0.0.0", "--port", "8080"]
