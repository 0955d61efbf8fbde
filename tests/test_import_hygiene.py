
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_never_imports_comfy():
    code = ("import sys, unifusion_core, unifusion_core.dit, unifusion_core.lap, unifusion_core.flow, "
            "unifusion_core.checkpoint, unifusion_core.pipeline, unifusion_core.vlm, unifusion_core.cli;"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'nodes')];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_pack_imports_without_comfyui():
    """ComfyUI imports the pack folder as a package; without ComfyUI that must not fail."""
    code = ("import importlib.util, sys;"
            f"spec = importlib.util.spec_from_file_location('unifusion_pack', r'{ROOT / '__init__.py'}',"
            f" submodule_search_locations=[r'{ROOT}']);"
            "m = importlib.util.module_from_spec(spec); sys.modules['unifusion_pack'] = m; spec.loader.exec_module(m);"
            "assert not hasattr(m, 'comfy_entrypoint');"
            "import unifusion_pack.nodes as n; assert n.NODE_CLASSES == []")
    subprocess.run([sys.executable, "-c", code], cwd="/", check=True)


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "unifusion_core", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "generate" in out.stdout and "demo" in out.stdout


def _import_pack(prelude: str) -> subprocess.CompletedProcess:
    code = ("import importlib.util, logging, sys, types;" + prelude +
            f"spec = importlib.util.spec_from_file_location('unifusion_pack', r'{ROOT / '__init__.py'}',"
            f" submodule_search_locations=[r'{ROOT}']);"
            "m = importlib.util.module_from_spec(spec); sys.modules['unifusion_pack'] = m; spec.loader.exec_module(m);"
            "assert not hasattr(m, 'comfy_entrypoint')")
    return subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)


def test_pack_logs_one_line_when_its_nodes_cannot_load_inside_comfyui():
    """Inside ComfyUI (``comfy`` imported) but with the nodes unimportable (here: no ``comfy_api``),
    the pack still imports and says so in one log line; outside ComfyUI it stays quiet."""
    inside = _import_pack("sys.modules['comfy'] = types.ModuleType('comfy');")
    lines = [ln for ln in inside.stderr.splitlines() if "UniFusion" in ln]
    assert len(lines) == 1 and "could not be imported" in lines[0] and "requirements" in lines[0], inside.stderr
    assert "UniFusion" not in _import_pack("").stderr
