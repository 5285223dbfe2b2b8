"""OpenAI's API as its clients expect it, mounted at `/v1`."""

from starlette.routing import BaseRoute, Route

from api.openai.chat_completions import chat_completions
from api.openai.models import get_model, list_models
from api.openai.resume import resume_completion

routes: list[BaseRoute] = [
    Route("/models", list_models, methods=["GET"]),
    Route("/models/{model_id:path}", get_model, methods=["GET"]),
    Route("/chat/completions", chat_completions, methods=["POST"]),
    Route("/chat/completions/{completion_id}/stream", resume_completion, methods=["GET"]),
]
