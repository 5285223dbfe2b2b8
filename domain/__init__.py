"""Shared vocabulary of the API and the workers: settings, models, repositories, events, errors.

Nothing here imports `api` or `workers`.
"""
