"""What a source file imports, read from its syntax tree: for the tests of which way the apps
depend (no module is imported, so nothing runs)."""

import ast
from pathlib import Path


def imported_modules(path: Path, *, names: bool = True) -> set[str]:
    """Every module a file imports, at its top or inside a function, and (with `names`) each name
    it imports from a module as "module.name", since a submodule may be imported that way."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if names:
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found
