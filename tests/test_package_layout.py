"""The pack's layout: what a Comfy registry package ships (everything `.comfyignore` leaves in) imports
only shipped files and never starts processes; the core's top level holds library modules only."""
from __future__ import annotations

import ast
import fnmatch
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _patterns() -> list[str]:
    lines = (ROOT / ".comfyignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    """gitignore's subset that .comfyignore uses: ``dir/`` (a folder anywhere at its path), globs, names."""
    for pat in patterns:
        if pat.startswith("!"):
            raise AssertionError(f".comfyignore: negations are not understood by this check ({pat!r})")
        if pat.endswith("/"):
            if rel.startswith(pat) or ("/" not in pat.rstrip("/") and f"/{pat}" in f"/{rel}"):
                return True
        elif fnmatch.fnmatch(rel, pat) or ("/" not in pat and fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pat)):
            return True
    return False


def _tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = out.split()
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:  # not a git checkout: the files on disk
        skip = {".git", ".venv", ".venv457", ".venv-latest", "__pycache__", "runs"}
        files = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
                 if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]
    return [f for f in files if (ROOT / f).is_file()]


def shipped_py() -> list[str]:
    pats = _patterns()
    return sorted(f for f in _tracked() if f.endswith(".py") and not ignored(f, pats))


def _guarded(node, parents) -> bool:
    """Inside ``try: ... except ImportError`` (an optional piece, allowed to be absent)."""
    for p in parents.get(node, ()):
        if isinstance(p, ast.Try) and any(
                h.type is not None and any(getattr(n, "id", "") in ("ImportError", "ModuleNotFoundError")
                                           for n in ast.walk(h.type)) for h in p.handlers):
            return True
    return False


def _imports(rel: str):
    """(module file candidates, line, guarded) of every import of the pack's own modules in ``rel``."""
    tree = ast.parse((ROOT / rel).read_text(), rel)
    parents: dict = {}
    stack = [(tree, ())]
    while stack:  # node -> its ancestors
        node, anc = stack.pop()
        parents[node] = anc
        stack.extend((c, anc + (node,)) for c in ast.iter_child_nodes(node))
    pkg = Path(rel).parent.parts  # the package holding rel (the repo root is the pack's package)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                if node.level - 1 > len(pkg):
                    continue  # beyond the pack (its own package): not ours to check
                parts = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] in ("unifusion_core", "nodes"):
                parts = node.module.split(".")
            else:
                continue
            for alias in node.names:
                yield parts, alias.name, node.lineno, _guarded(node, parents)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("unifusion_core", "nodes"):
                    yield alias.name.split("."), None, node.lineno, _guarded(node, parents)


def _files_of(parts, name) -> list[str]:
    """The files importing ``parts`` (and ``name`` from it, when that is a submodule) loads."""
    out, path = [], Path(*parts) if parts else Path(".")
    for i in range(1, len(parts) + 1):  # every package on the way runs its __init__
        init = Path(*parts[:i]) / "__init__.py"
        if (ROOT / init).is_file():
            out.append(init.as_posix())
    if (ROOT / path.with_suffix(".py")).is_file():
        out.append(path.with_suffix(".py").as_posix())
    if name and (ROOT / path / f"{name}.py").is_file():
        out.append((path / f"{name}.py").as_posix())
    if name and (ROOT / path / name / "__init__.py").is_file():
        out.append((path / name / "__init__.py").as_posix())
    return out


def test_comfyignore_matcher():
    pats = ["tests/", "unifusion_core/train/", "Makefile", "requirements-lock*.txt", "unifusion_core/toy/demo.py"]
    assert ignored("tests/test_x.py", pats) and ignored("unifusion_core/train/trainer.py", pats)
    assert ignored("Makefile", pats) and ignored("requirements-lock-457.txt", pats)
    assert ignored("unifusion_core/toy/demo.py", pats)
    assert not ignored("unifusion_core/toy/world.py", pats) and not ignored("nodes/encode.py", pats)
    assert not ignored("unifusion_core/training.py", pats)


def test_registry_package_is_closed_and_starts_no_process():
    files = shipped_py()
    assert "nodes/encode.py" in files and "unifusion_core/pipeline.py" in files and "__init__.py" in files
    assert not any(f.startswith(("tests/", "benchmarks/", "unifusion_core/train/")) for f in files)
    shipped, problems = set(files), []
    for rel in files:
        for parts, name, line, guarded in _imports(rel):
            for target in _files_of(parts, name):
                if target not in shipped and not guarded:
                    problems.append(f"{rel}:{line} imports {target}, which .comfyignore leaves out")
        tree = ast.parse((ROOT / rel).read_text(), rel)
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m.split(".")[0] == "subprocess" for m in mods):
                problems.append(f"{rel}:{node.lineno} imports subprocess (registry scans flag it)")
    assert not problems, "\n".join(problems)


def test_core_top_level_is_library_only():
    """No demo, harness or process code at the core's top level: each module there is importable
    without ComfyUI and starts nothing."""
    top = sorted(p.name for p in (ROOT / "unifusion_core").glob("*.py"))
    assert "demo.py" not in top and "comfy_host.py" not in top and "layers.py" not in top
    for name in top:
        text = (ROOT / "unifusion_core" / name).read_text()
        tree = ast.parse(text, name)
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad = [m for m in mods if m.split(".")[0] in ("subprocess", "comfy", "comfy_api", "socket", "urllib")]
            assert not bad, f"unifusion_core/{name}:{node.lineno} imports {bad}"


def test_only_the_condition_module_assembles_a_condition():
    """Features -> kept tokens (``Features.keep``) and the layer choice for pooling happen in
    ``unifusion_core/condition.py`` only; the pipeline, trainer, nodes and inspector call it."""
    callers = []
    for rel in _tracked():
        if rel.endswith(".py") and not rel.startswith("tests/") and rel not in (
                "unifusion_core/condition.py", "unifusion_core/vlm/features.py"):
            tree = ast.parse((ROOT / rel).read_text(), rel)
            callers += [f"{rel}:{n.lineno}" for n in ast.walk(tree)
                        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "keep"]
    assert not callers, f"Features.keep called outside condition.py: {callers}"
    callers = ("unifusion_core/pipeline.py", "unifusion_core/train/batches.py", "unifusion_core/train/trainer.py",
               "unifusion_core/train/state.py", "nodes/encode.py", "nodes/inspector.py")
    missing = [rel for rel in callers if "condition import" not in (ROOT / rel).read_text()]
    assert not missing, f"not going through unifusion_core/condition.py: {missing}"
