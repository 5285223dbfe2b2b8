"""The codebase's own rules, checked: layering, lint and types."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> set[str]:
    """Every module a package's files import by absolute name, `typing.TYPE_CHECKING` imports too."""
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imported_packages(package: str) -> set[str]:
    return {module.split(".")[0] for module in imported_modules(package)}


FRAMEWORKS = {"starlette", "sse_starlette", "mcp", "mcp_types", "arq", "agents", "pydantic_ai", "chatkit"}
SURFACES = ["openai", "todo", "chatkit", "mcp", "web", "runs_api"]


def test_domain_imports_no_framework_and_none_of_ours() -> None:
    assert imported_packages("domain").isdisjoint({"api", "workers", "switchboard", "todo", "demo_llm", *FRAMEWORKS})


def test_api_holds_no_agent_code_and_workers_no_routes() -> None:
    assert imported_packages("api").isdisjoint({"workers", "demo_llm", "pydantic_ai", "agents"})
    assert imported_packages("workers").isdisjoint({"api", "starlette", "sse_starlette"})


def test_no_surface_imports_another() -> None:
    for surface in SURFACES:
        others = {f"api.{other}" for other in SURFACES if other != surface}
        imported = {".".join(module.split(".")[:2]) for module in imported_modules(f"api/{surface}")}
        assert imported.isdisjoint(others), f"api/{surface} imports {sorted(imported & others)}"


def test_the_todo_feature_and_the_demo_model_stand_below_api_and_workers() -> None:
    assert imported_packages("todo").isdisjoint({"api", "workers", "switchboard", "demo_llm"})
    assert imported_packages("demo_llm").isdisjoint({"api", "workers", "domain", "switchboard", "todo"})


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
