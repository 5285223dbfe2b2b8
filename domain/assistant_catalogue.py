"""Every assistant a deployment offers: the built-in ones and those of the assistants file.

Built once per process (the API's app, each worker) from the settings, and passed down.
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.assistant_file import FileAssistant, load_assistants_file
from domain.assistants import ASSISTANTS, AssistantInfo
from domain.settings import Settings


class AssistantCatalogue:
    def __init__(self, file_assistants: Sequence[FileAssistant] = ()) -> None:
        self.file_assistants = tuple(file_assistants)
        self._infos: dict[str, AssistantInfo] = {
            **ASSISTANTS,
            **{assistant.name: assistant.info() for assistant in self.file_assistants},
        }

    def find(self, name: str, *, user_id: str) -> AssistantInfo | None:
        """The assistant `name` if `user_id` may use it. An assistant closed to the user is None, exactly as
        one that does not exist: its name tells nobody outside its users anything."""
        info = self._infos.get(name)
        return info if info is not None and info.open_to(user_id) else None

    def visible_to(self, user_id: str) -> list[AssistantInfo]:
        return [info for info in self._infos.values() if info.open_to(user_id)]


def load_catalogue(settings: Settings) -> AssistantCatalogue:
    """The built-in assistants and the file's; `AssistantsFileError` (a configuration error) lists its mistakes."""
    if settings.assistants_file is None:
        return AssistantCatalogue()
    return AssistantCatalogue(load_assistants_file(settings.assistants_file))
