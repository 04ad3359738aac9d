"""How vidseg's modules import each other: every module imports on its own, the module-level imports form no cycle,
imports sit at module top (outside ``commands/``, whose modules import lazily so that ``vidseg --help`` is
instant) unless listed below with the reason, and what is meant to stay free of torch does."""

import ast
import subprocess
import sys
from pathlib import Path

import vidseg

PACKAGE = Path(vidseg.__file__).parent
# ``python -m vidseg`` runs the command line on import.
NOT_IMPORTABLE = {"vidseg.__main__"}

TORCH_FREE = "keeps `import vidseg`, vidseg.config and the command modules free of torch (`vidseg --help`)"
OPTIONAL = "optional dependency"
# (module, what it imports inside a function) -> why it cannot be at the module's top.
ALLOWED_IN_FUNCTIONS = {
    ("vidseg", "vidseg.segment"): TORCH_FREE,
    ("vidseg.config", "vidseg.models"): TORCH_FREE,
    ("vidseg.config", "vidseg.data.index"): TORCH_FREE,
    ("vidseg.config", "vidseg.data.labels"): TORCH_FREE,
    ("vidseg.data.clips", "vidseg.data.cache"): "cycle: vidseg.data.cache imports vidseg.data.clips",
    ("vidseg.data.index", "vidseg.data"): "cycle: the layout modules import vidseg.data.index",
    ("vidseg.export", "onnx"): OPTIONAL + " (the onnx extra)",
    ("vidseg.export", "onnxruntime"): OPTIONAL + " (the onnx extra)",
    ("vidseg.quantize", "onnx"): OPTIONAL + " (the onnx extra)",
    ("vidseg.quantize", "onnxruntime"): OPTIONAL + " (the onnx extra)",
    ("vidseg.training.run_dir", "torch.utils.tensorboard"): OPTIONAL + " (tensorboard)",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> list[tuple[str, list[str], bool]]:
    """(imported module, names imported from it, whether the import runs inside a function) of each import
    statement of the file; imports under ``if TYPE_CHECKING:`` never run and are left out."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                visit_else(child, in_function)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, [], in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path}: relative import"
                found.append((child.module or "", [alias.name for alias in child.names], in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    def visit_else(node: ast.If, in_function: bool) -> None:
        for child in node.orelse:
            visit(ast.Module(body=[child], type_ignores=[]), in_function)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def module_level_graph() -> dict[str, set[str]]:
    """vidseg module -> the vidseg modules its module-level imports name (``from vidseg import viz`` names
    ``vidseg.viz``)."""
    graph = {}
    for name, path in MODULES.items():
        targets = set()
        for module, names, in_function in imports_of(path):
            if in_function or module.split(".")[0] != "vidseg":
                continue
            submodules = {f"{module}.{imported}" for imported in names} & MODULES.keys()
            targets |= submodules or {module}
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = walk(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = walk(start)
        if cycle:
            return cycle
    return None


def test_module_level_imports_form_no_cycle():
    graph = module_level_graph()
    assert graph["vidseg.segment"] >= {"vidseg.viz", "vidseg.models", "vidseg.checkpoint"}, "the graph is read"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(MODULES.keys() - NOT_IMPORTABLE)
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    run = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_imports_inside_functions_are_the_listed_ones():
    found = set()
    for name, path in MODULES.items():
        if name.startswith("vidseg.commands"):
            continue
        found |= {(name, module) for module, _, in_function in imports_of(path) if in_function}
    unlisted = sorted(found - ALLOWED_IN_FUNCTIONS.keys())
    assert not unlisted, f"move these imports to the module's top, or list them with the reason: {unlisted}"
    stale = sorted(ALLOWED_IN_FUNCTIONS.keys() - found)
    assert not stale, f"these imports are at the module's top now; remove them from the list: {stale}"


def test_torch_free_modules_stay_free_of_torch():
    commands = [name for name in MODULES if name.startswith("vidseg.commands.")]
    code = (
        "import sys\n"
        f"for name in {['vidseg', 'vidseg.config', 'vidseg.cli', *commands]!r}:\n"
        "    __import__(name)\n"
        "import vidseg.cli\n"
        "vidseg.cli.build_parser()\n"
        "print(sorted(m for m in ('torch', 'cv2', 'av') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", f"{TORCH_FREE}; loaded: {run.stdout.strip()}"
