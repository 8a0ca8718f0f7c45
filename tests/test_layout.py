"""The package's layout, read from the source with `ast`: layers import only downwards and
never in a circle, every CLI is flags plus a call into the library (short, importing no
other CLI), the frozen model has one loader and evaluation one loop, and the import paths
of earlier versions still work or name their new home."""

import ast
import importlib
import pathlib
import re
import subprocess
import sys

import pytest

from xprompt_jax import _moved, terminal

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xprompt_jax"

# Layers, bottom first: a module may import its own layer or lower ones, never higher.
LAYERS = [
    ("xprompt_jax.errors", "xprompt_jax.interrupts", "xprompt_jax.fileio", "xprompt_jax.markdown",
     "xprompt_jax._moved", "xprompt_jax.terminal", "xprompt_jax.gin_utils",
     "xprompt_jax.compile_cache", "xprompt_jax.cli", "xprompt_jax"),
    ("xprompt_jax.models",),
    ("xprompt_jax.checkpoints",),
    ("xprompt_jax.tasks",),
    ("xprompt_jax.prompts",),
    ("xprompt_jax.training",),
    ("xprompt_jax.evaluation", "xprompt_jax.analysis", "xprompt_jax.t5x_compat"),
    ("xprompt_jax.runs",),
    ("xprompt_jax.xprompt",),
    ("xprompt_jax.world",),
]
CLI_FILES = ["train.py", "evaluate.py", "ensemble.py", "infer.py", "export.py", "prune.py",
             "quickstart.py", "demo.py", "xprompt/__main__.py", "world/pretrain.py"]
MAX_CLI_LINES = 150


def _module_name(path: pathlib.Path) -> str:
    if path.is_relative_to(ROOT / "tasks"):
        rel = ("tasks",) + path.relative_to(ROOT / "tasks").with_suffix("").parts
    else:
        rel = path.relative_to(PACKAGE).with_suffix("").parts
    parts = ("xprompt_jax",) + tuple(p for p in rel if p != "__init__")
    return ".".join(parts)


def _sources():
    files = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "tasks").rglob("*.py"))
    return {_module_name(p): p for p in files}


def _imports(name: str, path: pathlib.Path, sources):
    """The `xprompt_jax` modules `name` imports (anywhere in the file): `from pkg import x`
    is the submodule `pkg.x` where there is one, else `pkg`."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(_known(a.name, sources) for a in node.names
                       if a.name.startswith("xprompt_jax"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("xprompt_jax"):
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                out.add(sub if sub in sources else _known(module, sources))
    return out


def _known(module: str, sources) -> str:
    """The longest source module that `module` names."""
    while module not in sources and "." in module:
        module = module.rpartition(".")[0]
    return module


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} is in no layer"
    return rank


def _graph():
    sources = _sources()
    return sources, {name: _imports(name, path, sources) - {name}
                     for name, path in sources.items()}


def _cli_modules():
    return {_module_name(PACKAGE / f) for f in CLI_FILES}


def test_no_import_runs_up_a_layer_or_around_a_circle():
    sources, graph = _graph()
    clis = _cli_modules()
    upward = [(a, b) for a, deps in graph.items() if a not in clis for b in deps
              if b in sources and b not in clis and _layer(b) > _layer(a)]
    assert not upward, f"imports from a lower layer to a higher one: {upward}"
    # circles: strongly connected components of more than one module
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in sources:
                continue
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
                circles.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sources:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_layer_check_can_fail():
    """The checker sees a planted upward import (a training module importing the runs layer)."""
    assert _layer("xprompt_jax.training.trainer") < _layer("xprompt_jax.runs.build")
    tree_imports = _imports("xprompt_jax.training.trainer", PACKAGE / "training" / "trainer.py",
                            _sources())
    assert "xprompt_jax.training.frozen_model" in tree_imports
    assert not any(m.startswith("xprompt_jax.runs") for m in tree_imports)


def test_clis_are_flags_and_one_call():
    sources, graph = _graph()
    clis = _cli_modules()
    assert clis <= set(sources)
    for name in clis:
        lines = len(sources[name].read_text().splitlines())
        assert lines <= MAX_CLI_LINES, f"{name}: {lines} lines"
        assert not graph[name] & (clis - {name}), f"{name} imports another CLI"
    # every CLI that `python -m` runs is quiet (terminal.py) and has its console script
    modules = {m for m in terminal.CLI_MODULES if not m.endswith(".__main__")}
    assert modules == {n.replace(".__main__", "") for n in clis}
    setup = (ROOT / "setup.py").read_text()
    scripts = re.findall(r'"(xprompt-[a-z]+)=', setup)
    assert sorted(scripts) == sorted(terminal.CONSOLE_SCRIPTS)


def _calls(name: str):
    """(module, function name) of every call of `name` in the package's source."""
    out = []
    for module, path in _sources().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = getattr(func, "attr", None) or getattr(func, "id", None)
                if called == name:
                    out.append(module)
    return sorted(set(out))


def test_one_frozen_model_loader_and_one_evaluation_loop():
    # the pretrained checkpoint is read onto the mesh in one place (the prompt
    # initializers' `load_embedding` reads only the token embedding)
    assert _calls("load_pretrained_params") == ["xprompt_jax.checkpoints.pretrained",
                                                "xprompt_jax.runs.frozen"]
    assert _calls("load_pretrained") == ["xprompt_jax.runs.build", "xprompt_jax.runs.frozen"]
    assert _calls("init_variables") == ["xprompt_jax.training.frozen_model"]
    # the evaluation kernels are called by the evaluator's loop alone
    assert _calls("score_options") == ["xprompt_jax.evaluation.evaluator"]
    assert _calls("generate") == ["xprompt_jax.evaluation.evaluator"]


def test_no_issue_numbers_in_code_or_docs():
    pattern = re.compile(r"\bissue ?#?\d+", re.I)
    files = [p for p in list(PACKAGE.rglob("*.py")) + list((ROOT / "tasks").rglob("*.py"))
             + list((ROOT / "gin").rglob("*.gin")) + list((ROOT / "docs").rglob("*.md"))
             + list((ROOT / "bench").glob("*.py")) + list((ROOT / "tests").glob("*.py"))
             + [ROOT / "README.md"]]
    found = [str(p.relative_to(ROOT)) for p in files
             if p.name != "test_layout.py" and pattern.search(p.read_text())]
    assert not found, found


def _moved_names():
    for module, names in _moved.MOVED_NAMES.items():
        for name, (home, same) in names.items():
            yield module, name, home, same


@pytest.mark.parametrize("module,name,home,same", list(_moved_names()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_moved_names_work_or_name_their_new_home(module, name, home, same):
    mod = importlib.import_module(module)
    new_module, _, new_name = home.split(" ", 1)[0].partition(":")
    target = getattr(importlib.import_module(new_module), new_name)
    if same and name in vars(mod):  # the module still uses the name (an import of it)
        assert getattr(mod, name) is target
    elif same:
        with pytest.warns(DeprecationWarning, match=re.escape(new_module)):
            assert getattr(mod, name) is target
    else:
        with pytest.raises(ImportError, match=re.escape(f"{module}.{name} moved to {new_module}")):
            getattr(mod, name)


def test_moved_modules_import_in_a_fresh_interpreter():
    """`from <old module> import <name>` as user code has it: each old module gives its
    new home's names, and a name the new home lacks fails naming the new home."""
    checks = ["from xprompt_jax.training.evaluation import Evaluator, EvalConfig",
              "from xprompt_jax.training.pretrained import load_pretrained_params",
              "from xprompt_jax.domain_shift import LABEL_MAPS, run_transfers",
              "from xprompt_jax.xprompt.joint_rewind import per_candidate_best",
              "from xprompt_jax.training.bank_evaluation import majority_vote"]
    code = "; ".join(checks) + "\ntry:\n    from xprompt_jax.training.heldout_eval import " \
        "SelectionWithHeldout\nexcept ImportError as e:\n    print('ERR', e)"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout
    assert "ERR" in out and "EvalConfig.heldout_split" in out and \
        "xprompt_jax.runs.report" in out, out
    for old in _moved.MOVED_MODULES:
        assert not (PACKAGE / (old.split(".", 1)[1].replace(".", "/") + ".py")).exists(), old


def test_the_jax_smoke_set_names_existing_tests():
    """Every entry of conftest.JAX_SMOKE (what CI reruns under the other jax version) names
    a test file, or a test function in it, that exists: a rename cannot drop it silently."""
    import conftest

    assert conftest.JAX_SMOKE
    for entry in conftest.JAX_SMOKE:
        path, _, name = entry.partition("::")
        source = ROOT / path
        assert source.is_file(), entry
        if name:
            assert re.search(rf"^def {re.escape(name)}\(", source.read_text(), re.M), entry
