# syntax=docker/dockerfile:1
# Build: a wheel of the service and its dependencies. Run: slim, non-root, migrations then the server.
FROM python:3.12-slim AS build
WORKDIR /src
RUN python -m venv /opt/g4g
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
RUN /opt/g4g/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/g4g/bin/pip install --no-cache-dir .

FROM python:3.12-slim
ENV PATH=/opt/g4g/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    G4G_HOST=0.0.0.0 \
    G4G_PORT=8000 \
    G4G_ENVIRONMENT=production \
    G4G_DATA_DIR=/var/lib/g4g
RUN groupadd --system g4g && useradd --system --gid g4g --home-dir /var/lib/g4g --create-home g4g
COPY --from=build /opt/g4g /opt/g4g
USER g4g
WORKDIR /var/lib/g4g
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['G4G_PORT']}/healthz\", timeout=2)"]
# Production sets DATABASE_URL, G4G_DATA_KEY and G4G_LOOKUP_KEY; without DATABASE_URL the embedded PostgreSQL lives in the volume.
VOLUME ["/var/lib/g4g"]
CMD ["sh", "-c", "g4g migrate && exec g4g serve"]
