"""The core's structure (docs/architecture.md, 'The map'): few modules at the top, the rest in subpackages that
name the parts, imports that read top-down (no cycle), and no module past the size cap."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = os.path.join(ROOT, "MedSAMSegment", "MedSAMSegmentLib")
PACKAGE = "MedSAMSegmentLib"
TOP_LEVEL_MAX_MODULES = 12
CORE_MODULE_MAX_LINES = 450
SUBPACKAGES = ("engine", "models", "io", "scene", "remote", "learning")


def core_modules() -> dict:
    """Dotted module name -> file path, for every module of the core (a package by its __init__.py)."""
    modules = {}
    for folder, dirs, files in os.walk(CORE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                parts = [PACKAGE, *os.path.relpath(os.path.join(folder, name[:-3]), CORE).split(os.sep)]
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = os.path.join(folder, name)
    return modules


def imports_of(name: str, path: str, modules: dict) -> set:
    """The core modules that ``name`` imports (``from .x import y`` counts y when y is a module)."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in modules and c != name)
    return found


def import_cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan), each a sorted list."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_core_has_no_import_cycle():
    modules = core_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert sum(len(edges) for edges in graph.values()) > 100  # the walk sees the real imports
    assert import_cycles(graph) == []


def test_few_modules_stand_at_the_top_and_the_rest_in_named_subpackages():
    top = [name for name in os.listdir(CORE) if name.endswith(".py") and name != "__init__.py"]
    assert len(top) <= TOP_LEVEL_MAX_MODULES, sorted(top)
    for package in SUBPACKAGES:
        assert os.path.isfile(os.path.join(CORE, package, "__init__.py")), package


def test_no_core_module_is_past_the_size_cap():
    lines = {name: sum(1 for unused in open(path, encoding="utf-8")) for name, path in core_modules().items()}
    too_long = {name: count for name, count in lines.items() if count > CORE_MODULE_MAX_LINES}
    assert not too_long, f"core modules over {CORE_MODULE_MAX_LINES} lines (split them by job): {too_long}"


def test_the_public_api_names_all_resolve():
    import MedSAMSegmentLib

    for name in MedSAMSegmentLib.__all__:
        assert getattr(MedSAMSegmentLib, name) is not None, name


def test_mask_fingerprints_compare_finds_a_changed_mask(tmp_path, capsys):
    import importlib.util

    script = os.path.join(os.path.dirname(os.path.dirname(CORE)), "benchmarks", "mask_fingerprints.py")
    spec = importlib.util.spec_from_file_location("mask_fingerprints", script)
    fingerprints = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fingerprints)
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text('{"case": "a", "sha256": "1", "voxels": 5}\n{"case": "b", "sha256": "2", "voxels": 7}\n')
    new.write_text('{"case": "a", "sha256": "1", "voxels": 5}\n{"case": "b", "sha256": "2", "voxels": 7}\n')
    assert fingerprints.compare(str(old), str(new)) == 0
    new.write_text('{"case": "a", "sha256": "1", "voxels": 5}\n{"case": "b", "sha256": "3", "voxels": 8}\n')
    assert fingerprints.compare(str(old), str(new)) == 1
    assert "differs: b (7 vs 8 voxels)" in capsys.readouterr().out


def test_the_scripts_call_only_what_the_settings_classes_have():
    """A study script that names a module-level settings object (``MODEL = ModelSettings(...)``) uses only the
    attributes its class has: moving a method out of a settings class breaks no script silently (the studies run
    for hours, so a call that fails at the first case is found late)."""
    from MedSAMSegmentLib import settings as settings_module

    classes = {name: getattr(settings_module, name) for name in ("ModelSettings", "SegmentationSettings")}
    scripts = [os.path.join(ROOT, "benchmarks", name) for name in os.listdir(os.path.join(ROOT, "benchmarks"))
               if name.endswith(".py")]
    checked = []
    for path in scripts:
        tree = ast.parse(open(path, encoding="utf-8").read())
        objects = {target.id: classes[node.value.func.id] for node in tree.body if isinstance(node, ast.Assign)
                   and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                   and node.value.func.id in classes for target in node.targets if isinstance(target, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in objects:
                cls = objects[node.value.id]
                assert hasattr(cls(), node.attr), f"{os.path.basename(path)}: {cls.__name__} has no {node.attr!r}"
        if objects:
            checked.append(path)
    assert len(checked) >= 3  # the studies that load their model from a module-level ModelSettings
