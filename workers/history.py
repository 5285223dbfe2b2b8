"""Turning chat messages, stored or sent by the client, into PydanticAI message history."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, assert_never

from pydantic_ai.messages import (
    BinaryContent,
    ImageUrl,
    ModelMessage,
    ModelRequest,
    ModelRequestPart,
    ModelResponse,
    ModelResponsePart,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UploadedFile,
    UserContent,
    UserPromptPart,
)

from domain import content
from domain.chat import ChatMessage


def to_model_messages(messages: Sequence[ChatMessage]) -> list[ModelMessage]:
    """Consecutive request-side messages (system, user, tool results) merge into one request."""
    history: list[ModelMessage] = []
    request_parts: list[ModelRequestPart] = []
    tool_names: dict[str, str] = {}

    def close_request() -> None:
        if request_parts:
            history.append(ModelRequest(parts=list(request_parts)))
            request_parts.clear()

    for message in messages:
        if message.role in ("system", "developer"):
            request_parts.append(SystemPromptPart(content=message.text))
        elif message.role == "user":
            request_parts.append(UserPromptPart(content=_user_content(message)))
        elif message.role == "tool":
            call_id = message.tool_call_id or ""
            request_parts.append(
                ToolReturnPart(
                    tool_name=tool_names.get(call_id, message.name or "tool"),
                    content=message.text,
                    tool_call_id=call_id,
                )
            )
        else:
            close_request()
            parts: list[ModelResponsePart] = []
            if message.text:
                parts.append(TextPart(content=message.text))
            for call in message.tool_calls or ():
                tool_names[call.id] = call.function.name
                parts.append(
                    ToolCallPart(tool_name=call.function.name, args=call.function.arguments, tool_call_id=call.id)
                )
            history.append(ModelResponse(parts=parts or [TextPart(content="")]))
    close_request()
    return history


def _user_content(message: ChatMessage) -> str | list[UserContent]:
    """Text alone goes as one string, as it always has; with media, every part in the client's order."""
    if not message.media_parts or not isinstance(message.content, list):
        return message.text
    return [_user_item(part) for part in message.content]


def _user_item(part: content.TextPart | content.MediaPart) -> UserContent:
    match part:
        case content.TextPart():
            return part.text
        case content.ImagePart():
            image = part.image_url
            # A `detail` goes on only when the client gave one.
            metadata = {"detail": image.detail} if image.detail else None
            if image.url.startswith("data:"):
                return _binary(content.DataURL.split(image.url), metadata)
            return ImageUrl(url=image.url, vendor_metadata=metadata)
        case content.AudioPart():
            audio = part.input_audio
            return BinaryContent(data=base64.b64decode(audio.data), media_type=content.AUDIO_MEDIA_TYPES[audio.format])
        case content.FilePart():
            file = part.file
            if file.file_id is not None:
                # OpenAI's file ids; the API lets them through to OpenAI only.
                return UploadedFile(file_id=file.file_id, provider_name="openai")
            inline = file.inline()
            assert inline is not None  # a file part has data or an id
            return _binary(inline, None)
        case _:
            assert_never(part)


def _binary(data_url: content.DataURL, metadata: dict[str, Any] | None) -> BinaryContent:
    content = BinaryContent(
        data=base64.b64decode(data_url.data), media_type=data_url.media_type, vendor_metadata=metadata
    )
    return BinaryContent.narrow_type(content)
