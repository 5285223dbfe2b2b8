"""The todo assistant's own HTTP API, mounted at `/api`."""

from starlette.routing import BaseRoute, Route

from api.todo import history
from api.todo.chat import chat

routes: list[BaseRoute] = [
    Route("/me", history.me, methods=["GET"]),
    Route("/{user_id}/chat", chat, methods=["POST"]),
    Route("/{user_id}/tasks", history.list_tasks, methods=["GET"]),
    Route("/{user_id}/conversations", history.list_conversations, methods=["GET"]),
    Route("/{user_id}/conversations/{conversation_id}/messages", history.list_messages, methods=["GET"]),
    Route("/{user_id}/conversations/{conversation_id}", history.delete_conversation, methods=["DELETE"]),
]
