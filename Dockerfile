# improv-capture server. Media flows over UDP on ephemeral ports: run with --network host
# (or give performers a TURN server), e.g.
#   docker run --network host -v "$PWD/data:/data" improv-capture
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    IMPROV_HOST=0.0.0.0 \
    IMPROV_PORT=8000 \
    IMPROV_DATA_DIR=/data \
    IMPROV_STATIC_DIR=/app/static

WORKDIR /app
COPY pyproject.toml README.md ./
COPY improv_capture ./improv_capture
COPY static ./static
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data improv \
    && mkdir -p /data && chown improv /data

USER improv
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
# One process is one core: set IMPROV_WORKERS to the cores to give (docs/architecture.md,
# "Cluster mode"); the router keeps port 8000, workers listen on loopback inside the container.
CMD ["improv-capture", "serve"]
