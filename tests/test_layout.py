"""The package's folders are its layers, and imports only go down them (lazy imports inside functions included):

    errors <- methods <- training <- cli, evaluation <- grpo.py, sft.py (the entry points) <- experiments

`methods/` is pure torch (no trl, transformers, accelerate, DeepSpeed, vLLM or datasets), `evaluation/` and `cli/` do
not import each other, and no two modules import each other, directly or through others."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "open_r1_egsw"
LAYERS = {"errors": 0, "methods": 1, "training": 2, "cli": 3, "evaluation": 3, "grpo": 4, "sft": 4, "experiments": 5}
HEAVY = ("trl", "transformers", "accelerate", "deepspeed", "vllm", "datasets", "lighteval")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports (absolute names), at any depth of the file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


MODULES = _modules()
GRAPH = {name: {m for m in _imports(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _layer(name: str) -> tuple[str, int] | None:
    parts = name.split(".")
    if len(parts) < 2:
        return None  # the package itself
    return parts[1], LAYERS[parts[1]]


def test_every_module_has_a_layer():
    assert {_layer(name)[0] for name in MODULES if _layer(name)} <= set(LAYERS)
    # and the layers are real folders or entry points of this tree
    assert {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in MODULES.values()} - {"__init__"} == set(
        LAYERS
    )


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _layer(n)))
def test_imports_only_go_down(name):
    folder, layer = _layer(name)
    for target in sorted(GRAPH[name]):
        if target == "open_r1_egsw":
            continue
        other, other_layer = _layer(target)
        assert other == folder or other_layer < layer, f"{name} imports {target} (layer {other}: not below {folder})"


def test_methods_are_pure_torch():
    for name, path in MODULES.items():
        if name.startswith("open_r1_egsw.methods"):
            heavy = sorted(m for m in _imports(name, path) if m.split(".")[0] in HEAVY)
            assert heavy == [], f"{name} imports {heavy}"


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name, path):
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, name, target]))
            if target not in state:
                visit(target, [*path, name])
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [])


def test_the_checks_see_a_violation(tmp_path):
    """The walk finds lazy and relative imports (so the tests above are not vacuous)."""
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from ..experiments import embedded\n    import trl\n")
    assert _imports("open_r1_egsw.evaluation.x", source) >= {"open_r1_egsw.experiments.embedded", "trl"}
