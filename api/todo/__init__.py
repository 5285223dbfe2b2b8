"""The todo assistant's own HTTP API, mounted at `/api`."""

from starlette.routing import BaseRoute, Route

from api.todo import history
from api.todo.chat import chat

routes: list[BaseRoute] = [
    Route("/me", history.me, methods=["GET"]),
    Route("/{user_id}/chat", chat, methods=["POST"]),
    Route("/{user_id}/tasks", history.list_tasks, methods=["GET"]),
    Route("/{user_id}/conversations", history.list_conversations, methods=["GET"]),
    # Conversation ids are the client's own and may hold a `/`: the `path` convertor takes the rest.
    Route("/{user_id}/conversations/{conversation_id:path}/messages", history.list_messages, methods=["GET"]),
    Route("/{user_id}/conversations/{conversation_id:path}", history.delete_conversation, methods=["DELETE"]),
]
