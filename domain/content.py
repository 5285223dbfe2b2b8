"""The parts a message's content may be made of, as OpenAI's Chat Completions defines them.

Text, an image (a URL or a data URL, with its `detail`), audio (base64 with its format) and a file
(base64 data, or the id of a file uploaded to the provider). Parts are kept in the shape the client
sent, so they are stored, replayed and given to the model as they came; `workers/history.py` turns
them into PydanticAI's multimodal types. Inline data is checked to be base64 here, where a client can
be told which part is wrong, rather than fail in a worker.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, field_validator, model_validator

from domain.errors import PayloadTooLarge
from domain.text import StorableText

AudioFormat = Literal["wav", "mp3"]
AUDIO_MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "mp3": "audio/mpeg"}
DEFAULT_FILE_MEDIA_TYPE = "application/octet-stream"
TEXT_MEDIA_TYPES = ("application/json", "application/xml", "application/x-yaml", "application/yaml", "application/toml")


class DataURL(BaseModel):
    """`data:<media type>;base64,<data>`, taken apart."""

    model_config = ConfigDict(frozen=True)

    media_type: str
    data: str

    @classmethod
    def parse(cls, url: str) -> DataURL:
        """The URL's parts, its data checked to be base64."""
        parsed = cls.split(url)
        _check_base64(parsed.data)
        return parsed

    @classmethod
    def split(cls, url: str) -> DataURL:
        """The URL's parts, its data unchecked."""
        header, sep, data = url.partition(",")
        if not sep or not header.startswith("data:"):
            raise ValueError("a data URL looks like data:<media type>;base64,<data>")
        params = header.removeprefix("data:").split(";")
        if "base64" not in params[1:]:
            raise ValueError("a data URL must be base64-encoded (data:<media type>;base64,<data>)")
        return cls(media_type=params[0].strip().lower() or DEFAULT_FILE_MEDIA_TYPE, data=data)


def _check_base64(data: str) -> None:
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the data is not valid base64") from None


def decoded_size(data: str) -> int:
    """The size in bytes of what base64 `data` decodes to, without decoding it."""
    return len(data) * 3 // 4 - data[-2:].count("=")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "input_text"] = "text"
    text: StorableText


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: StorableText
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _http_or_data(cls, url: str) -> str:
        if url.startswith("data:"):
            if not DataURL.parse(url).media_type.startswith("image/"):
                raise ValueError("a data URL of an image must have an image/ media type")
        elif not url.startswith(("https://", "http://")):
            raise ValueError("an image URL must be an http(s) URL or a data URL")
        return url


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["image_url"]
    image_url: ImageURL

    @field_validator("image_url", mode="before")
    @classmethod
    def _bare_url(cls, value: object) -> object:
        # Some clients send the URL itself rather than {"url": ...}.
        return {"url": value} if isinstance(value, str) else value


class InputAudio(BaseModel):
    model_config = ConfigDict(extra="ignore")

    data: StorableText
    format: AudioFormat

    @field_validator("data")
    @classmethod
    def _base64(cls, data: str) -> str:
        _check_base64(data)
        return data


class AudioPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["input_audio"]
    input_audio: InputAudio


class FileSpec(BaseModel):
    """A file given inline (`file_data`: a data URL, or bare base64 named by `filename`) or by `file_id`."""

    model_config = ConfigDict(extra="ignore")

    file_data: StorableText | None = None
    file_id: StorableText | None = None
    filename: StorableText | None = None

    @field_validator("file_data")
    @classmethod
    def _data(cls, data: str | None) -> str | None:
        if data is not None:
            if data.startswith("data:"):
                DataURL.parse(data)
            else:
                _check_base64(data)
        return data

    @model_validator(mode="after")
    def _data_or_id(self) -> FileSpec:
        if (self.file_data is None) == (self.file_id is None):
            raise ValueError("a file part needs either file_data or file_id")
        inline = self.inline()
        if inline is not None:
            # Models take audio as input_audio parts and no video at all; a text file goes to them as text.
            if inline.media_type.startswith(("audio/", "video/")):
                raise ValueError(f"a file part cannot carry {inline.media_type}; send audio as an input_audio part")
            if is_text_like(inline.media_type):
                try:
                    base64.b64decode(inline.data).decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"a {inline.media_type} file must be UTF-8 text") from None
        return self

    def inline(self) -> DataURL | None:
        """The file's data with its media type (from the data URL, else guessed from `filename`), if inline."""
        if self.file_data is None:
            return None
        if self.file_data.startswith("data:"):
            return DataURL.split(self.file_data)
        media_type = mimetypes.guess_type(self.filename or "")[0] or DEFAULT_FILE_MEDIA_TYPE
        return DataURL(media_type=media_type, data=self.file_data)


def is_text_like(media_type: str) -> bool:
    """Text a model is given inline, as text (as PydanticAI decides it): it has to decode."""
    return media_type.startswith("text/") or media_type in TEXT_MEDIA_TYPES or media_type.endswith(("+json", "+xml"))


class FilePart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["file"]
    file: FileSpec


MediaPart = ImagePart | AudioPart | FilePart


def _part_tag(value: Any) -> str | None:
    # Tags name no key of the input, so an error's place in the input reads without them.
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind == "input_text" or (kind is None and isinstance(value, dict) and "text" in value):
        # A text part stored before parts had types of their own left its default type out.
        kind = "text"
    return f"{kind} part" if isinstance(kind, str) else None


ContentPart = Annotated[
    Annotated[TextPart, Tag("text part")]
    | Annotated[ImagePart, Tag("image_url part")]
    | Annotated[AudioPart, Tag("input_audio part")]
    | Annotated[FilePart, Tag("file part")],
    Discriminator(
        _part_tag,
        custom_error_type="content_part_type",
        custom_error_message="a content part must be an object whose type is text, image_url, input_audio or file",
    ),
]


def _content_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "parts"
    return None


MessageContent = Annotated[
    Annotated[StorableText, Tag("string")] | Annotated[list[ContentPart], Tag("parts")],
    Discriminator(
        _content_tag,
        custom_error_type="message_content",
        custom_error_message="content must be a string or a list of content parts",
    ),
]
"""A message's content: a string, or parts (what OpenAI's clients send for images, audio and files)."""


class HasContent(Protocol):
    @property
    def content(self) -> str | list[TextPart | MediaPart] | None: ...


def part_bytes(part: TextPart | MediaPart) -> int:
    """The size of the data a part carries inline, decoded; 0 for text, URLs and file ids."""
    match part:
        case ImagePart() if part.image_url.url.startswith("data:"):
            return decoded_size(part.image_url.url.partition(",")[2])
        case AudioPart():
            return decoded_size(part.input_audio.data)
        case FilePart() if part.file.file_data is not None:
            data = part.file.file_data
            return decoded_size(data.partition(",")[2] if data.startswith("data:") else data)
        case _:
            return 0


def check_part_sizes(messages: Sequence[HasContent], *, max_part_bytes: int) -> None:
    """Refuse (`PayloadTooLarge`, naming the part) a part whose inline data is over `max_part_bytes`."""
    for index, message in enumerate(messages):
        for part_index, part in enumerate(message.content if isinstance(message.content, list) else ()):
            size = part_bytes(part)
            if size > max_part_bytes:
                where = f"messages.{index}.content.{part_index}"
                raise PayloadTooLarge(
                    f"{where}: the {part.type} part holds {size} bytes, more than the {max_part_bytes} allowed",
                    param=where,
                )
