"""Imports run one way (docs/DESIGN.md, "Layers"): a module imports only from its own layer or
below, and no two top-level modules import each other, directly or round a loop.

Every import counts, the ones inside functions too: a lazy `import train_s2s` in a model is still
the model knowing its trainer. The walk is static (ast), so nothing is imported or run.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FOUNDATION, DATA, MODELS, TOP = 1, 2, 3, 4
LAYER_NAMES = {FOUNDATION: "foundation", DATA: "data", MODELS: "models", TOP: "top"}

# The one place where each module's layer is written. A new module goes in here when it is born.
LAYERS = {
    # 1. foundation: configuration, audio and text, checkpoint files, spectral measures
    "config": FOUNDATION,
    "audio_io": FOUNDATION,
    "telugu_text": FOUNDATION,
    "checkpoint_io": FOUNDATION,
    "spectral": FOUNDATION,
    # 2. data: synthesis, corpora, augmentation, the dialogue domain, tokenizer, batching
    "telugu_tts": DATA,
    "synthetic_corpus": DATA,
    "prepare_speaker_data": DATA,
    "augment": DATA,
    "phrasing_grammar": DATA,
    "dialogue_domain": DATA,
    "dialogue_corpus": DATA,
    "telugu_tokenizer": DATA,
    "s2s_clock": DATA,
    "data_order": DATA,
    "s2s_batching": DATA,
    "agent_tools": DATA,
    "brain_data": DATA,
    # 3. models: none imports a train script, an evaluation, the server or the benchmark
    "telugu_codec_fixed": MODELS,
    "discriminator_dac": MODELS,
    "speaker_embeddings": MODELS,
    "s2s_transformer": MODELS,
    "context_manager": MODELS,
    "telugu_asr": MODELS,
    "ear_lm": MODELS,
    "agent_brain": MODELS,
    "agent_mouth": MODELS,
    "voice_agent": MODELS,
    # 4. top: training, evaluation, serving (a train script may call an evaluation, not the reverse)
    "train_utils": TOP,
    "train_codec_dac": TOP,
    "train_speakers": TOP,
    "train_s2s": TOP,
    "train_asr": TOP,
    "train_brain": TOP,
    "train_mouth": TOP,
    "codec_eval": TOP,
    "s2s_eval": TOP,
    "frame_scheduler": TOP,
    "streaming_server_advanced": TOP,
    "s2s_client": TOP,
    "benchmark_latency": TOP,
    "soak": TOP,
    "system_test": TOP,
}
TOOLS_LAYER = TOP  # tools/*.py stand on everything and nothing stands on them

# Pairs that would keep to the layers and still be wrong: an evaluation never imports a train script.
FORBIDDEN = [(lambda m: m.endswith("_eval"), lambda dep: dep.startswith("train_"),
              "an evaluation imports a train script")]


def repo_modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(ROOT.glob("*.py"))}


def imported_modules(path: Path, known) -> dict[str, int]:
    """Repo modules `path` imports anywhere in it (top of file or inside a function), with the first
    line of each; importlib.import_module("name") with a literal name counts as well."""
    found: dict[str, int] = {}

    def add(name, line):
        top = name.split(".")[0]
        if top in known:
            found.setdefault(top, line)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            add(node.module, node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            add(node.args[0].value, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    modules = repo_modules()
    return {name: {dep: line for dep, line in imported_modules(path, modules).items() if dep != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, {})):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_violations(graph, layers) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        for dep, line in sorted(deps.items()):
            if dep in layers and mod in layers and layers[dep] > layers[mod]:
                bad.append(f"{mod}.py:{line} imports {dep} ({LAYER_NAMES[layers[dep]]}, layer {layers[dep]}) "
                           f"from layer {layers[mod]} ({LAYER_NAMES[layers[mod]]})")
            for is_mod, is_dep, why in FORBIDDEN:
                if is_mod(mod) and is_dep(dep):
                    bad.append(f"{mod}.py:{line} imports {dep}: {why}")
    return bad


def test_every_module_has_a_layer():
    missing = sorted(set(repo_modules()) - set(LAYERS))
    assert not missing, (
        f"{', '.join(m + '.py' for m in missing)} has no layer: add it to LAYERS in tests/test_imports.py "
        "(1 foundation, 2 data, 3 models, 4 top; see docs/DESIGN.md, \"Layers\") and import only from its "
        "layer or below")


def test_imports_go_down_the_layers():
    bad = layer_violations(import_graph(), LAYERS)
    assert not bad, "imports that go up a layer (docs/DESIGN.md, \"Layers\"):\n  " + "\n  ".join(bad)


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_tools_import_only_known_modules():
    """tools/*.py sit on top: they may import any layer, but only modules that have one."""
    modules = repo_modules()
    for path in sorted((ROOT / "tools").glob("*.py")):
        for dep, line in imported_modules(path, modules).items():
            assert dep in LAYERS and LAYERS[dep] <= TOOLS_LAYER, f"tools/{path.name}:{line} imports {dep}"


def test_models_do_not_know_their_trainers():
    """The issue's own words, checked by name: no model imports a train_*, an *_eval, the server or
    the benchmark (the layers already say so; this says it in a reader's terms)."""
    graph = import_graph()
    top = ("streaming_server_advanced", "benchmark_latency", "s2s_client", "system_test")
    for mod in (m for m, layer in LAYERS.items() if layer <= MODELS and m in graph):
        wrong = [d for d in graph[mod] if d.startswith("train_") or d.endswith("_eval") or d in top]
        assert not wrong, f"{mod}.py imports {wrong}"


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}, ["a", "b", "c", "a"]),
    ({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}, None),
])
def test_the_cycle_finder_reports_the_path(graph, cycle):
    assert find_cycle(graph) == cycle


def test_the_walk_sees_lazy_imports(tmp_path):
    """An import inside a function counts: that is how a model came to import its trainer."""
    path = tmp_path / "m.py"
    path.write_text("import os\n\ndef load():\n    import train_s2s\n    from checkpoint_io import codec_hash\n")
    assert imported_modules(path, {"train_s2s", "checkpoint_io"}) == {"train_s2s": 4, "checkpoint_io": 5}
    assert layer_violations({"s2s_transformer": {"train_s2s": 4}}, LAYERS) == [
        "s2s_transformer.py:4 imports train_s2s (top, layer 4) from layer 3 (models)"]
