"""The package's layers stay true: every import inside ``minidiff`` (at module level or inside a
function) goes to a module of the same or a lower layer, and no chain of imports comes back to
where it started.  Package ``__init__`` files only gather names for users and are left out."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minidiff"

# Lowest first.  A module may import modules of its own layer or of layers above it in this list.
LAYERS = [
    ("foundations", ["_checks", "backend", "_progress"]),
    ("schedules and data", ["schedules", "diffusion", "nn.mlp", "nn.optim", "nn.attention", "data.toy2d", "data.grid2d",
                            "data.images",
                            "data.captions", "data.tokenizer",
                            "data.fetch", "data.layout", "metrics", "plot", "checkpoint"]),
    ("algorithms", ["samplers", "sde", "elbo", "edm", "consistency", "losses", "guidance", "autoencoding",
                    "contrastive", "augment", "discrete"]),
    ("method layer", ["methods"]),
    ("the 2-D trainer", ["train"]),
    ("torch models and loop", ["torch._init", "torch.mlp", "torch.attention", "torch.unet", "torch.classifier", "torch.evaluate",
                               "torch.loop", "torch.sampling", "torch.toy", "torch.autoencoder", "torch.text",
                               "torch.conditioning", "torch.clip"]),
    ("trainers", ["torch.train", "torch.train_autoencoder", "torch.latent", "torch.masked_diffusion"]),
    ("lessons and command line", ["exercises", "check", "cli"]),
]
LAYER_OF = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}


def modules():
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        if rel.name == "__init__":
            continue
        out[".".join(rel.parts)] = path
    return out


def imports_of(name: str, path: Path, known: set) -> set:
    """The minidiff modules ``name`` imports, wherever the import statement stands."""
    package = name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            mod = mod.removeprefix("minidiff.") if mod != "minidiff" else ""
            # `from . import x` / `from .torch import loop`: x may be a module of its own
            targets = [f"{mod}.{a.name}".lstrip(".") for a in node.names] + [mod]
        else:
            continue
        for t in targets:
            t = t.removeprefix("minidiff.")
            if t in known:
                found.add(t)
    found.discard(name)
    return found


def upward_imports(graph) -> list:
    return [f"{a} ({LAYERS[LAYER_OF[a]][0]}) imports {b} ({LAYERS[LAYER_OF[b]][0]})"
            for a, targets in sorted(graph.items()) for b in sorted(targets) if LAYER_OF[b] > LAYER_OF[a]]


def circles(graph) -> list:
    """Every circle a depth-first walk meets, as 'a -> b -> a'."""
    state, found = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


@pytest.fixture(scope="module")
def graph():
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_layer(graph):
    assert sorted(set(graph) - set(LAYER_OF)) == [], "give each new module a layer in LAYERS"
    assert sorted(set(LAYER_OF) - set(graph)) == [], "LAYERS names a module that no longer exists"


def test_no_import_goes_up_a_layer(graph):
    assert upward_imports(graph) == []


def test_no_circle_of_imports(graph):
    assert circles(graph) == []


def test_the_core_never_imports_the_torch_package(graph):
    """torch is an extra: outside minidiff/torch/ only the command line may import it (the 2-D
    trainer's torch backend registers itself from minidiff.torch.toy)."""
    reaching = [f"{a} imports {b}" for a, targets in sorted(graph.items()) if not a.startswith("torch.") and a != "cli"
                for b in sorted(targets) if b.startswith("torch.")]
    assert reaching == []


def test_the_import_graph_is_read_from_the_source(graph):
    """Relative, absolute and in-function imports are all seen."""
    assert {"_checks", "consistency", "edm", "samplers"} <= graph["methods"]    # from . import ... / from .x import
    assert "checkpoint" in graph["train"]                                       # inside a function
    assert "torch.loop" in graph["torch.train"]


def test_the_checks_catch_an_upward_import_and_a_circle():
    fake = {"samplers": {"methods"}, "methods": {"samplers", "edm"}, "edm": set()}
    assert upward_imports(fake) == ["samplers (algorithms) imports methods (method layer)"]
    assert circles(fake) == ["methods -> samplers -> methods"]
