"""Imports flow one way: front ends (the CLI, the TUI, the HTTP API) call the core, never the reverse.

Every module's imports are read with `ast`, the ones inside functions included, so a late import
cannot slip a front end into the core.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "rag", "quantize", "tunnel", "tui", "android_client_api", "bench")
FRONT_ENDS = ("app.cli", "tui", "android_client_api")


@dataclass(frozen=True)
class ForbiddenImport:
    module: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}) imports {self.imported}"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, list[str]]]:
    """Per import statement, its line and the modules it may load, relative imports resolved."""
    statements = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            statements.append((node.lineno, [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                parts = package[: len(package) - node.level + 1]
                target = ".".join([*parts, node.module] if node.module else parts)
            else:
                target = node.module or ""
            # `from app import cli` loads app.cli: each imported name may be a module too.
            statements.append((node.lineno, [target, *(f"{target}.{alias.name}" for alias in node.names)]))
    return statements


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def front_end_of(module: str) -> str | None:
    return next((front for front in FRONT_ENDS if within(module, front)), None)


def forbidden_imports(root: Path) -> list[ForbiddenImport]:
    """Core modules importing a front end, and front ends importing one another."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(path, root)
            if within(module, "bench"):
                continue  # benchmarks drive every layer, as a user would
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            own_front_end = front_end_of(module)
            if own_front_end == "app.cli":
                continue  # the command line launches the TUI and the server
            for line, names in imported_names(tree, module, path.name == "__init__.py"):
                crossing = [name for name in names if front_end_of(name) not in (None, own_front_end)]
                if crossing:
                    found.append(ForbiddenImport(module, crossing[0], line))
    return sorted(set(found), key=lambda v: (v.module, v.line, v.imported))


def test_only_the_command_line_and_the_front_ends_import_a_front_end():
    # rag, quantize and tunnel included: they stand below every front end.
    violations = forbidden_imports(REPO)
    assert not violations, "imports against the layering:\n" + "\n".join(map(str, violations))


def _tree_with(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return tmp_path


def test_a_core_module_made_to_import_the_tui_is_reported(tmp_path):
    root = _tree_with(
        tmp_path,
        {
            "app/engine.py": "def run():\n    from tui.app import run_tui\n    run_tui(None)\n",
            "rag/store.py": "from app import cli\n",
            "quantize/twin/trainer.py": "import android_client_api.service\n",
            "app/engine_helpers.py": "from .cli import main\n",
        },
    )
    reported = {(v.module, v.imported) for v in forbidden_imports(root)}
    assert ("app.engine", "tui.app") in reported
    assert ("rag.store", "app.cli") in reported
    assert ("quantize.twin.trainer", "android_client_api.service") in reported
    assert ("app.engine_helpers", "app.cli") in reported


def test_front_ends_do_not_reach_into_each_other_but_the_command_line_launches_them(tmp_path):
    root = _tree_with(
        tmp_path,
        {
            "app/cli/serve.py": "from android_client_api.app import create_app\n",
            "app/cli/main.py": "from tui.app import run_tui\n",
            "tui/app.py": "from android_client_api.service import LanternService\n",
            "android_client_api/service.py": "from .settings import ServerSettings\n",
            "android_client_api/app.py": "from app.cli.context import assistant_from\n",
            "bench/bench_api.py": "from android_client_api.app import create_app\n",
        },
    )
    reported = {(v.module, v.imported) for v in forbidden_imports(root)}
    assert reported == {
        ("tui.app", "android_client_api.service"),
        ("android_client_api.app", "app.cli.context"),
    }
