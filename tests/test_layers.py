"""The package's shape: layers that import one way, no import circles, and a CLI that loads no
torch until a command runs (README, "Layout")."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "rewind"

# A package may import only packages of a lower rank (and the top-level modules: config, settings,
# steps, seeds, errors, which import nothing of rank 3 or more).
RANK = {"archive": 0, "data": 1, "models": 1, "prune": 2, "train": 3, "analysis": 4, "launch": 4, "linear": 5,
        "studies": 6, "reproduce": 7, "cli": 8}
TOP_LEVEL_BELOW = 3


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports() -> dict[str, set[str]]:
    """Module -> the rewind modules it imports anywhere in its text (in functions too, and through
    importlib.import_module with a constant name)."""
    mods = modules()

    def known(name: str) -> str:
        while name not in mods:
            name = name.rsplit(".", 1)[0]
        return name

    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {known(a.name) for a in node.names if a.name.startswith("rewind")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith("rewind"):
                    found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else known(base) for a in node.names}
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
                if node.args and isinstance(node.args[0], ast.Constant):
                    found.add(known(node.args[0].value))
        graph[name] = found - {name}
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rewind"


def test_layers_import_only_downward():
    upward = []
    for module, targets in imports().items():
        own = RANK.get(layer(module))
        for target in targets:
            theirs = RANK.get(layer(target))
            if layer(target) == layer(module) or theirs is None:
                continue
            if (own is None and theirs >= TOP_LEVEL_BELOW) or (own is not None and theirs >= own):
                upward.append(f"{module} -> {target}")
    assert upward == [], "imports that point up (or sideways) between layers:\n" + "\n".join(sorted(upward))


def test_no_import_circles():
    graph, cycles = imports(), []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == [], "import circles:\n" + "\n".join(cycles)


def loaded(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_low_layers_load_nothing_from_above():
    # The training layer whole: the loop, its hooks (the online statistics among them), trunks, warm starts.
    held = loaded("import rewind.data, rewind.models, rewind.train, rewind.train.trunk, rewind.train.segment, "
                  "rewind.train.warmstart, rewind.train.replicas")
    above = sorted(m for m in held if m.startswith("rewind.") and layer(m) in ("studies", "launch", "analysis", "cli"))
    assert above == [] and "torch" in held


def test_the_cli_loads_no_torch_pandas_or_matplotlib():
    held = loaded("import rewind.cli")
    assert {"torch", "pandas", "matplotlib"} & held == set() and "click" in held


def test_every_rewind_name_the_tools_import_exists():
    """tools/ (benchmarks, the GPU check) import rewind inside functions too, where no test reaches:
    every `from rewind... import name` there must name a module and an attribute that exist."""
    import importlib

    missing = []
    for path in sorted((ROOT.parent / "tools").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rewind":
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name) and not _is_module(f"{node.module}.{a.name}")]
    assert missing == []


def _is_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# The one import by a name known only at run time: a plan names the module that trains it (a study, or
# `rewind.reproduce.run`), which `launch.files.read_plan` checks against a fixed list before it is loaded;
# and the papers' registry, which loads a paper's own module (in its own layer) by the name it lists.
COMPUTED_IMPORTS = {"rewind.studies.common", "rewind.reproduce.papers"}


def test_no_module_imports_a_computed_name_but_the_plan_dispatch():
    """A computed `import_module(name)` is invisible to the layer test above: only the plan dispatch and
    the papers' registry may."""
    found = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                    "import_module", "__import__") and node.args and not isinstance(node.args[0], ast.Constant):
                found.add(name)
    assert found == COMPUTED_IMPORTS


def test_launch_imports_only_the_archive_and_the_top_level():
    """README's layout: `launch` sits beside `analysis` and reads nothing of training or data."""
    reached = {layer(t) for m, targets in imports().items() if layer(m) == "launch" for t in targets}
    assert reached <= {"launch", "archive", "config", "settings", "steps", "seeds", "errors"}, reached
