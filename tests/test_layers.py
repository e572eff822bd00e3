"""The package's layers, enforced on its imports: every import of every module under ingot/, at the top or inside
a function, read with ``ast`` (nothing is imported).

Data flows one way: models -> compile -> artifacts -> runtime -> server. Each rule below says what a layer must
not import; ``DELIBERATE_EDGES`` lists the one edge against the flow that is there on purpose. The cli and the
bench command sit above every layer and may import any of them; ``ingot.deploy`` (replicas on Ray Serve) sits beside
the cli, which hands `ingot serve --replicas` to it, and takes the cli's ``locate`` to find what a model names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ingot"

# layer -> the layers (module prefixes) it must never import, and why
FORBIDDEN = {
    "ingot.runtime": {
        "ingot.compile": "the runtime serves an artifact alone: no compiler at serving time",
        "ingot.models": "the runtime needs no model source code (no transformers modeling code)",
    },
    "ingot.artifacts": {
        "ingot.runtime": "an artifact is data; whoever runs it imports it, not the other way round",
        "ingot.compile": "an artifact is data; whoever builds it imports it, not the other way round",
    },
    "ingot.server": {
        "ingot.compile": "the server serves artifacts; compiling is the cli's job",
        "ingot.models": "the server reaches models only through the runtime",
        "ingot.deploy": "replicas run the server, not the other way round",
    },
    "ingot.deploy": {
        "ingot.compile": "replicas serve artifacts; a model is compiled once, by the cli's locate, before they start",
        "ingot.models": "replicas reach models only through the runtime",
    },
}

# What the server may take from ingot.artifacts: the manifest's types (a model's kind, its options), to describe
# what it serves. Its internals (store.py: where artifacts live; integrity.py: checking files; toolchain.py:
# whether this ingot may load them) belong to the runtime, which loads artifacts, and to the cli, which finds them.
SERVER_MAY_IMPORT_FROM_ARTIFACTS = {"ingot.artifacts.manifest"}

# The one import against the flow, on purpose: verification runs a freshly built artifact the way serving runs
# it (compile/verify/ calls the runtime's ModelRunner and DetectorRunner, its letterboxing and box decoding), so a
# compile fails on what a user would see. See docs/architecture.md, "Layers".
DELIBERATE_EDGES = {("ingot.compile.verify", "ingot.runtime")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str) -> set[str]:
    """The ingot modules ``module`` imports anywhere in its file (``from package import submodule`` counts as the
    submodule; ``from module import name`` as the module)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1 packages
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name in MODULES}


GRAPH = {module: _imports(module) for module in MODULES}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_every_module_is_read():
    assert "ingot.runtime.engine" in GRAPH and "ingot.compile.pipeline" in GRAPH and "ingot.server.app" in GRAPH
    assert "ingot.compile.pipeline" in GRAPH["ingot.compile.llm.kind"]  # imports are found
    assert "ingot.runtime.model_runner" in GRAPH["ingot.compile.verify.llm"]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer: str):
    broken = [
        f"{module} imports {target}: {why}"
        for module, targets in GRAPH.items()
        if _within(module, layer)
        for target in sorted(targets)
        for forbidden, why in FORBIDDEN[layer].items()
        if _within(target, forbidden)
    ]
    assert not broken, "\n".join(broken)


def test_the_server_takes_only_the_manifest_types_from_artifacts():
    broken = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if _within(module, "ingot.server")
        for target in sorted(targets)
        if _within(target, "ingot.artifacts") and target not in SERVER_MAY_IMPORT_FROM_ARTIFACTS
    ]
    assert not broken, "\n".join(broken)


def test_compile_reaches_the_runtime_only_to_verify():
    """compile -> runtime is the one edge against the flow, and only verification takes it."""
    edges = {
        (module, target)
        for module, targets in GRAPH.items()
        if _within(module, "ingot.compile")
        for target in targets
        if _within(target, "ingot.runtime")
    }
    outside = sorted(
        f"{module} imports {target}"
        for module, target in edges
        if not any(_within(module, source) and _within(target, dest) for source, dest in DELIBERATE_EDGES)
    )
    assert edges, "verification runs the artifact through the runtime: the edge is expected"
    assert not outside, "\n".join(outside)


def test_the_import_graph_has_no_cycle():
    """Top-level and function-level imports together: a lazy import must not hide a loop (Tarjan's components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in GRAPH[module]:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, "\n".join(" <-> ".join(cycle) for cycle in cycles)


def _absolute_imports(module: str, top_level_only: bool) -> set[str]:
    """Every absolute module name ``module`` imports (any package, not only ingot's): at its top level, or anywhere."""
    tree = ast.parse(MODULES[module].read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found


def test_ray_is_imported_only_by_deploy_and_deploy_only_on_demand():
    """Ray is an optional extra: only ingot.deploy imports it, and nothing imports ingot.deploy when it is imported
    itself (`ingot serve` takes it inside the function that serves --replicas), so ingot without Ray works."""
    outside = [m for m in MODULES if not _within(m, "ingot.deploy")]
    takes_ray = [m for m in outside if any(_within(name, "ray") for name in _absolute_imports(m, False))]
    assert not takes_ray, takes_ray
    takes_deploy = [m for m in outside if any(_within(n, "ingot.deploy") for n in _absolute_imports(m, True))]
    assert not takes_deploy, takes_deploy
    assert any(_within(name, "ray") for name in _absolute_imports("ingot.deploy.ray", True))  # the check can see it
