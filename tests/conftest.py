# Shared test fixtures. Service fixtures (redis_url, postgres_url, fake_llm) live in
# tests/_services.py and are registered here as a plugin.
pytest_plugins = ["tests._services"]
