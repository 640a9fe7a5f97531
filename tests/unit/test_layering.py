"""No service imports another: the apply layer, the governor, the position brain and the exit
brain share only the contract (``permitchain.contract``) and the common modules. A concept two
services need moves into the contract, so each service can change, and be read, on its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "permitchain"
SERVICES = ("apply_layer", "governor", "position_brain", "exit_brain")


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``tree``; ``from permitchain import x`` as
    ``permitchain.x``."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module == "permitchain":  # from permitchain import governor
                out += [(node.lineno, f"permitchain.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def service_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "permitchain" and parts[1] in SERVICES:
        return parts[1]
    return None


def offences(service: str) -> list[str]:
    found = []
    for path in sorted((SRC / service).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                found.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: relative import")
        for line, module in imported_modules(tree):
            other = service_of(module)
            if other is not None and other != service:
                found.append(f"{path.relative_to(SRC.parent)}:{line}: imports {module}")
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another(service: str) -> None:
    assert (SRC / service).is_dir()
    bad = offences(service)
    assert not bad, "a service imports another (move the shared part into contract/):\n" + (
        "\n".join(bad)
    )


def test_the_check_sees_an_offending_import() -> None:
    tree = ast.parse(
        "from permitchain.governor.policy import TradingState\n"
        "import permitchain.apply_layer.orders\n"
        "from permitchain import exit_brain\n"
        "from permitchain.contract.trading_state import TradingState\n"
    )
    found = {service_of(m) for _, m in imported_modules(tree)} - {None}
    assert found == {"governor", "apply_layer", "exit_brain"}
