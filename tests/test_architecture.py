"""The tree keeps its shape: no import cycle (function-level and TYPE_CHECKING imports included), and
files, classes and functions that fit in a head. The layers themselves are import-linter's contracts
(``[tool.importlinter]`` in pyproject.toml, run as ``lint-imports`` by ``.ci/run``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("registry", "cli", "api", "trainer", "evaluator", "migrations", "comfyui_wanlora")
MAX_FILE_LINES = 450
MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 100
# The training loop reads top to bottom (STYLE.md: nanoGPT, diffusers' train_text_to_image_lora.py).
LONG_FUNCTIONS_ALLOWED = {("trainer/train.py", "train")}


def _sources() -> dict[str, Path]:
    """Module name → file, for every first-party module."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, modules: set[str]) -> set[str]:
    """Every first-party module this one imports, wherever the import statement stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b` imports the module a.b when there is one, else a name of module a
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import a.b.c` of a name inside a.b
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    sources = _sources()
    modules = set(sources)
    graph = {m: _imports(m, p, modules) for m, p in sources.items()}
    assert _cycles(graph) == []


def test_cycle_finder_sees_function_level_imports(tmp_path: Path) -> None:
    """The check itself: a cycle hidden in a function body is found."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    modules = {"a", "b"}
    graph = {m: _imports(m, tmp_path / f"{m}.py", modules) for m in modules}
    assert _cycles(graph) == [["a", "b"]]


def _span(node: ast.AST) -> int:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])  # type: ignore[attr-defined]
    return int(node.end_lineno) - first + 1  # type: ignore[attr-defined]


def test_sizes_fit_in_a_head() -> None:
    problems = []
    for package in (*PACKAGES, "tests", "benchmarks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("migrations/versions/"):
                continue  # generated, one per schema change
            text = path.read_text()
            if (lines := len(text.splitlines())) > MAX_FILE_LINES:
                problems.append(f"{rel}: {lines} lines (at most {MAX_FILE_LINES})")
            for node in ast.walk(ast.parse(text, rel)):
                if isinstance(node, ast.ClassDef) and _span(node) > MAX_CLASS_LINES:
                    problems.append(f"{rel}: class {node.name} has {_span(node)} lines (at most {MAX_CLASS_LINES})")
                elif (
                    isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    and _span(node) > MAX_FUNCTION_LINES
                    and (rel, node.name) not in LONG_FUNCTIONS_ALLOWED
                ):
                    problems.append(
                        f"{rel}: function {node.name} has {_span(node)} lines (at most {MAX_FUNCTION_LINES})"
                    )
    assert problems == []


def test_both_backends_offer_every_call_of_the_contract() -> None:
    """mypy proves the contract in CI (``open_backend`` returns either backend as a ``Backend``); this
    says the same in a second, by name and keyword parameters, for every part of the contract."""
    import inspect

    from registry.backends import contract
    from registry.backends.local import Wanlora
    from registry.backends.remote import RemoteAccounts, RemoteEvaluation, RemoteRegistry, RemoteWanlora, RemoteWebhooks
    from registry.services.accounts import AccountService
    from registry.services.evaluation import EvaluationService
    from registry.services.registry import RegistryService
    from registry.services.webhooks import WebhookService

    parts = {
        contract.Backend: (Wanlora, RemoteWanlora),
        contract.RegistryOps: (RegistryService, RemoteRegistry),
        contract.EvaluationOps: (EvaluationService, RemoteEvaluation),
        contract.AccountOps: (AccountService, RemoteAccounts),
        contract.WebhookOps: (WebhookService, RemoteWebhooks),
    }
    missing = []
    for protocol, implementations in parts.items():
        calls = {n: f for n, f in vars(protocol).items() if inspect.isfunction(f) and not n.startswith("_")}
        assert calls, protocol
        for implementation in implementations:
            for name, call in calls.items():
                got = getattr(implementation, name, None)
                if got is None:
                    missing.append(f"{implementation.__name__}.{name}")
                elif set(inspect.signature(call).parameters) != set(inspect.signature(got).parameters):
                    missing.append(
                        f"{implementation.__name__}.{name}{inspect.signature(got)} ≠ {inspect.signature(call)}"
                    )
    assert missing == []
