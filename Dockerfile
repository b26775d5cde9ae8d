# billing-gql: the API (and, with another command, the worker or the migrations).
#   docker build -t billing-gql .
#   docker run --rm -e DATABASE_URL=postgresql://… billing-gql billing-gql migrate   # one-off
#   docker run -d -p 8000:8000 -e DATABASE_URL=… -e BILLING_GQL_ADMIN_KEYS=… billing-gql
#   docker run -d -e DATABASE_URL=… billing-gql billing-gql worker
# See docs/operations.md. tests/deploy/test_container.py runs the RUN and CMD below.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 billing \
    && useradd --system --uid 10001 --gid billing --no-create-home --shell /usr/sbin/nologin billing

WORKDIR /src
COPY pyproject.toml README.md ./
COPY billing_gql ./billing_gql
COPY plugins/stripe ./plugins/stripe
COPY plugins/polar ./plugins/polar
COPY plugins/sepay ./plugins/sepay
COPY scripts/container-install ./scripts/container-install
RUN sh scripts/container-install /opt/venv && rm -rf /src

WORKDIR /app
USER billing
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["billing-gql", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
