# GridToken: one image for every process (web, worker, beat, localnet, the one-shot init).
# The command decides the role; docker-compose.yml runs the same commands as `make demo`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall them (every pin ships a manylinux wheel). Only the
# runtime ones: tests, linter and browser driver are in requirements-dev.txt, which the image never installs.
COPY requirements.txt .
RUN pip install -r requirements.txt

# A fixed non-root uid; /run/gridtoken holds the mint authority key (a mounted secret or volume) and
# /data the local chain's ledger. Both exist in the image so named volumes inherit this ownership.
RUN useradd --create-home --uid 10001 --user-group gridtoken \
    && mkdir -p /run/gridtoken /data \
    && chown gridtoken:gridtoken /run/gridtoken /data \
    && chmod 0700 /run/gridtoken

COPY --chown=gridtoken:gridtoken . .

# The admin's and the dashboard's static files, compressed and content-hashed, for WhiteNoise to serve
# (gridtoken/settings.py). The build has no database and no secrets: these values only let the settings
# import for this one command, and nothing here connects anywhere.
RUN DEBUG=false SECRET_KEY=collectstatic-build-only SOLANA_KEYPAIR_PATH=/run/gridtoken/authority.json python manage.py collectstatic --noinput

USER gridtoken
EXPOSE 8000 8899

# The web process: ASGI serves REST, WebSocket, the dashboard and static files. See docker-compose.yml for the others.
CMD ["uvicorn", "gridtoken.asgi:application", "--host", "0.0.0.0", "--port", "8000"]
