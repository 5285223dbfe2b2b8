# One image for every role: api, worker and the one-shot migrate service differ only in their command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY pyproject.toml alembic.ini ./
COPY api ./api
COPY workers ./workers
COPY domain ./domain
COPY todo ./todo
COPY demo_llm ./demo_llm
COPY switchboard ./switchboard
COPY migrations ./migrations
RUN pip install --no-cache-dir --no-deps -e . \
    && useradd --system --uid 10001 switchboard
USER switchboard

EXPOSE 8000
CMD ["switchboard", "api", "--host", "0.0.0.0", "--port", "8000"]
