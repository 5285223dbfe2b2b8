# One image for every role: api, worker and the one-shot migrate service differ only in their command.
# The build context is what .dockerignore lets through: the runtime lock, the packages, the migrations.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /app

# What running needs, pinned (requirements-dev.lock adds the test toolchain, which stays out).
# A layer of its own, so that a change to the code does not install them again.
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml alembic.ini ./
COPY api ./api
COPY workers ./workers
COPY domain ./domain
COPY todo ./todo
COPY demo_llm ./demo_llm
COPY switchboard ./switchboard
COPY migrations ./migrations
# Editable, so the code stays in /app beside alembic.ini and migrations/, where `switchboard migrate`
# looks for them; --no-deps: everything it needs came from the lock.
RUN pip install --no-deps -e . \
    && groupadd --gid 10001 switchboard \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home --shell /usr/sbin/nologin switchboard

# Not root; numeric, so that an orchestrator can tell without reading /etc/passwd.
USER 10001:10001

# The API's port and a worker's metrics port (compose sets SWITCHBOARD_WORKER_METRICS_PORT=9100).
EXPOSE 8000 9100
CMD ["switchboard", "api", "--host", "0.0.0.0", "--port", "8000"]
