"""A user's todo list: add, list, complete, delete and update tasks, always scoped by user.

Tasks are addressed by `number`, the id the user sees (their own 1, 2, 3…). Every statement filters on
`user_id`, so another user's task behaves exactly like a missing one: `NotFound`, with the same words.

Each function validates before it writes, so a rejected call has written nothing; the caller owns the
transaction. Core statements on a plain connection, like `domain/runs.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.database import conflict_insert
from domain.errors import InvalidRequest, NotFound
from domain.models import Task, TaskSequence, utcnow
from domain.text import unstorable_reason

TaskStatus = Literal["all", "pending", "completed"]
TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
MAX_TITLE_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000
# Task numbers are the column's INTEGER: a number past it names no task (and cannot be bound at all).
MAX_NUMBER = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class TaskView:
    number: int
    title: str
    description: str | None
    completed: bool
    created_at: datetime
    updated_at: datetime

    @property
    def id(self) -> int:
        """The id the user sees: their task number (not the row's primary key)."""
        return self.number

    def as_dict(self) -> dict[str, Any]:
        """The API's shape of a task."""
        return {**self.as_tool_item(), "updated_at": self.updated_at.isoformat()}

    def as_tool_item(self) -> dict[str, Any]:
        """The shape `list_tasks` gives the model: exactly id, title, description, completed, created_at."""
        return {
            "id": self.number,
            "title": self.title,
            "description": self.description,
            "completed": self.completed,
            "created_at": self.created_at.isoformat(),
        }


_COLUMNS = (Task.number, Task.title, Task.description, Task.completed, Task.created_at, Task.updated_at)
TaskRow = Row[int, str, str | None, bool, datetime, datetime]


def _view(row: TaskRow) -> TaskView:
    return TaskView(
        number=row.number,
        title=row.title,
        description=row.description,
        completed=bool(row.completed),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def clean_title(title: object) -> str:
    if not isinstance(title, str):
        raise InvalidRequest("the title must be text", param="title")
    cleaned = title.strip()
    if not cleaned:
        raise InvalidRequest("the title must not be empty", param="title")
    if len(cleaned) > MAX_TITLE_CHARS:
        raise InvalidRequest(f"the title must be at most {MAX_TITLE_CHARS} characters", param="title")
    return _storable(cleaned, name="title")


def clean_description(description: object) -> str | None:
    """Blank means no description."""
    if description is None:
        return None
    if not isinstance(description, str):
        raise InvalidRequest("the description must be text", param="description")
    cleaned = description.strip()
    if len(cleaned) > MAX_DESCRIPTION_CHARS:
        raise InvalidRequest(f"the description must be at most {MAX_DESCRIPTION_CHARS} characters", param="description")
    return _storable(cleaned, name="description") or None


def _storable(text: str, *, name: str) -> str:
    # Tools take their text straight from a model or an MCP client: refuse what no column holds here,
    # where the tool can say so, not as a database error after the call was recorded.
    reason = unstorable_reason(text)
    if reason is not None:
        raise InvalidRequest(f"the {name} {reason}", param=name)
    return text


def parse_status(status: object) -> TaskStatus:
    if status not in TASK_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(TASK_STATUSES)}", param="status")
    return status  # type: ignore[return-value]


def _not_found(number: int) -> NotFound:
    return NotFound(f"task {number} not found", param="task_id")


def _check_number(number: int) -> None:
    if not 1 <= number <= MAX_NUMBER:
        raise _not_found(number)


async def _next_number(connection: AsyncConnection, user_id: str) -> int:
    """The user's next task number. The upsert takes the row lock, so concurrent adds never share one."""
    statement = (
        conflict_insert(connection, TaskSequence)
        .values(user_id=user_id, last_number=1)
        .on_conflict_do_update(index_elements=["user_id"], set_={"last_number": TaskSequence.last_number + 1})
        .returning(TaskSequence.last_number)
    )
    return int((await connection.execute(statement)).scalar_one())


async def add_task(connection: AsyncConnection, *, user_id: str, title: object, description: object = None) -> TaskView:
    cleaned_title = clean_title(title)
    cleaned_description = clean_description(description)
    number = await _next_number(connection, user_id)
    now = utcnow()
    result = await connection.execute(
        insert(Task)
        .values(
            user_id=user_id,
            number=number,
            title=cleaned_title,
            description=cleaned_description,
            completed=False,
            created_at=now,
            updated_at=now,
        )
        .returning(*_COLUMNS)
    )
    return _view(result.one())


async def list_tasks(
    connection: AsyncConnection,
    *,
    user_id: str,
    status: Literal["all", "pending", "completed"] = "all",
    after_number: int | None = None,
    limit: int | None = None,
) -> list[TaskView]:
    """The user's tasks by number; `after_number` and `limit` page through them."""
    query = select(*_COLUMNS).where(Task.user_id == user_id)
    status = parse_status(status)
    if status != "all":
        query = query.where(Task.completed == (status == "completed"))
    if after_number is not None:
        query = query.where(Task.number > after_number)
    query = query.order_by(Task.number)
    if limit is not None:
        query = query.limit(limit)
    return [_view(row) for row in (await connection.execute(query)).all()]


async def complete_task(connection: AsyncConnection, *, user_id: str, number: int) -> TaskView:
    """Mark the task done. Completing a completed task is not an error: it is already what was asked."""
    return await update_task(connection, user_id=user_id, number=number, completed=True)


async def delete_task(connection: AsyncConnection, *, user_id: str, number: int) -> TaskView:
    """Delete the task and return what it was. Its number is never handed out again."""
    _check_number(number)
    result = await connection.execute(
        delete(Task).where(Task.user_id == user_id, Task.number == number).returning(*_COLUMNS)
    )
    row = result.one_or_none()
    if row is None:
        raise _not_found(number)
    return _view(row)


async def update_task(
    connection: AsyncConnection,
    *,
    user_id: str,
    number: int,
    title: object = None,
    description: object = None,
    completed: bool | None = None,
) -> TaskView:
    """Change what is given; `None` leaves a field as it is (so a description cannot be cleared to None
    here, only to blank, which is stored as None)."""
    _check_number(number)
    values: dict[str, Any] = {}
    if title is not None:
        values["title"] = clean_title(title)
    if description is not None:
        values["description"] = clean_description(description)
    if completed is not None:
        values["completed"] = completed
    if not values:
        raise InvalidRequest("nothing to update: give a new title or description", param="title")
    values["updated_at"] = utcnow()
    result = await connection.execute(
        update(Task).where(Task.user_id == user_id, Task.number == number).values(**values).returning(*_COLUMNS)
    )
    row = result.one_or_none()
    if row is None:
        raise _not_found(number)
    return _view(row)
