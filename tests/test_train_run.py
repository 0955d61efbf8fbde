"""The trainer end to end: learning on T2I + edit examples, 2-process DDP on CPU, kill-and-resume,
bad data. Runs the real CLI (`python -m unifusion_core.train`, `accelerate launch`)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from unifusion_core.pipeline import Request, UniFusionPipeline
from unifusion_core.vlm import build_tiny_vlm

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
CORNERS = ["top left", "top right", "bottom left", "bottom right"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 T2I records (a coloured square in a corner, with a VERIFI rewrite) and 4 edits (move it to the middle)."""
    out = tmp_path_factory.mktemp("traindata")
    build_tiny_vlm("qwen2_5_vl", out / "vlm")
    recs = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        a = np.full((16, 16, 3), 40, np.uint8)
        a[(i // 2) * 8:(i // 2) * 8 + 8, (i % 2) * 8:(i % 2) * 8 + 8] = rgb
        Image.fromarray(a).save(out / f"t{i}.png")
        recs.append({"task": "t2i", "target": f"t{i}.png", "prompt": f"{name} block {CORNERS[i]}",
                     "rewrite": f"a {name} square in the {CORNERS[i]} corner"})
    for i, (name, rgb) in enumerate(COLOURS.items()):
        b = np.full((16, 16, 3), 40, np.uint8)
        b[4:12, 4:12] = rgb
        Image.fromarray(b).save(out / f"e{i}.png")
        recs.append({"task": "edit", "target": f"e{i}.png", "prompt": f"move the {name} block to the middle",
                     "refs": [f"t{i}.png"]})
    (out / "m.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return out


def _args(data, run_dir, **over):
    a = dict(manifest=data / "m.jsonl", vlm=data / "vlm", run_dir=run_dir, preset="tiny", resolution=16,
             buckets="1:1", batch_size=8, lr=2e-3, decay="linear", warmup_steps=5, max_steps=12, log_every=1,
             save_every=4, grad_clip=0, sample_steps=4)
    a.update(over)
    return [x for k, v in a.items() for x in (f"--{k}", str(v))]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU only


def _train(args, **kw):
    return subprocess.run([sys.executable, "-m", "unifusion_core.train", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, **kw)


def _grid_mse(png: Path, n: int, size: int = 16) -> np.ndarray:
    """The trainer's sample grid (row i = [target i | sample i]) -> (n, n) pixel MSE of sample i to target j."""
    grid = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64) / 255
    assert grid.shape == (n * size, 2 * size, 3), grid.shape
    targets = grid.reshape(n, size, 2 * size, 3)[:, :, :size]
    samples = grid.reshape(n, size, 2 * size, 3)[:, :, size:]
    return ((samples[:, None] - targets[None]) ** 2).mean(axis=(2, 3, 4))


def _steps(run_dir):
    with (Path(run_dir) / "log.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_learns_t2i_and_edit_targets(data, tmp_path):
    run = tmp_path / "learn"
    r = _train(_args(data, run, max_steps=800, batch_size=32, ema_decay=0, cfg_dropout=0, recon_share=0,
                     verifi_share=0.5, save_every=0, log_every=100, sample_steps=16), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    with (run / "log.csv").open() as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert losses[-1] < losses[0] / 10, losses  # measured: 0.71 -> 0.019
    grid = next((run / "samples").glob("*.png"))
    mse = _grid_mse(grid, 8)  # sample i (rows) vs target j (columns), pixel MSE in 0..1 units
    own = mse.diagonal()
    assert np.allclose(own, json.loads(grid.with_suffix(".json").read_text())["mse"], atol=1e-3)  # same images
    nearest_other = (mse + np.eye(8) * 1e9).min(axis=1)
    # every sample is its own target's, by a margin: at most half the distance to the nearest other target
    # (targets are >= 0.11 apart: another colour or another place), and the mean is lenient
    assert (own < 0.5 * nearest_other).all(), np.round(mse, 3)
    assert own.mean() < 0.05, np.round(own, 3)


def test_two_processes_on_cpu_end_identical_and_export_generates(data, tmp_path):
    run = tmp_path / "ddp"
    config = ROOT / "unifusion_core" / "train" / "accelerate_configs" / "cpu_ddp.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m",
           "unifusion_core.train", *_args(data, run, max_steps=6, batch_size=2, save_every=3)]
    # --device cpu: two gloo processes even where GPUs exist (never cuda:0 / cuda:1)
    cmd += ["--device", "cpu"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("exported ") == 1  # one export, by the main process of a 2-process group
    final = json.loads((run / "final_state.json").read_text())
    assert final["step"] == 6 and len(final["weights_sha256"]) == 2
    assert final["weights_sha256"][0] == final["weights_sha256"][1]
    pipe = UniFusionPipeline.from_files(run / "unifusion.safetensors", data / "vlm")
    img = pipe(Request("red block top left", width=16, height=16, steps=2)).images
    assert img.shape == (1, 16, 16, 3) and torch.isfinite(img).all()


def test_kill_and_resume_matches_an_uninterrupted_run(data, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "killed"
    assert _train(_args(data, ref), timeout=600).returncode == 0
    # the trainer stops itself after step 6 (state saved at 4, steps 5-6 done but not saved); no race
    proc = subprocess.Popen([sys.executable, "-m", "unifusion_core.train", *_args(data, run, pause_at_step=6)],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _, status = os.waitpid(proc.pid, os.WUNTRACED)  # returns once the process is stopped (or gone)
        assert os.WIFSTOPPED(status), f"the trainer ended (status {status}) instead of pausing at step 6"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run / "unifusion.safetensors").exists()
    killed_at = json.loads((run / "state" / (run / "state" / "latest").read_text() / "step.json").read_text())["step"]
    assert killed_at == 4 and _steps(run) == list(range(1, 7))
    r = _train(_args(data, run), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr
    a, b = load_file(str(ref / "unifusion.safetensors")), load_file(str(run / "unifusion.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise on CPU
    assert _steps(run) == list(range(1, 13))  # no step lost or repeated


def test_bad_files_are_skipped_and_the_run_completes(data, tmp_path):
    lines = []
    for line in (data / "m.jsonl").read_text().splitlines():  # same records, absolute paths
        rec = json.loads(line)
        rec["target"] = str(data / rec["target"])
        rec["refs"] = [str(data / r) for r in rec.get("refs", [])]
        lines.append(json.dumps(rec))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    lines += [json.dumps({"task": "t2i", "target": str(data / "missing.png"), "prompt": "gone"}),
              json.dumps({"task": "t2i", "target": str(tmp_path / "corrupt.png"), "prompt": "broken"})]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    run = tmp_path / "bad"
    r = _train(_args(data, run, manifest=tmp_path / "m.jsonl", max_steps=3, save_every=0))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipping manifest line 9" in r.stderr and "skipping manifest line 10" in r.stderr
    with (run / "log.csv").open() as f:
        assert int(list(csv.DictReader(f))[-1]["skipped"]) == 2
    assert (run / "unifusion.safetensors").exists()


def test_bad_manifest_stops_cleanly_with_one_sentence(data, tmp_path):
    (tmp_path / "m.jsonl").write_text('{"task": "t2i", "target": "a.png", "prompt": "x"}\n{oops\n')
    r = _train(_args(data, tmp_path / "run", manifest=tmp_path / "m.jsonl"))
    assert r.returncode == 2 and "line 2: not valid JSON" in r.stderr and "Traceback" not in r.stderr


def test_flux16_training_with_folder_caches_and_grad_checkpointing(data, tmp_path):
    """A flux16 model through the FLUX.1-format VAE, VLM features and target latents cached on disk."""
    from unifusion_core.vae import FluxAEConfig, FluxAutoEncoder, save_flux_vae

    torch.manual_seed(0)
    vae = FluxAutoEncoder(FluxAEConfig.tiny())
    vae.init_weights()
    save_flux_vae(vae, tmp_path / "ae.safetensors")
    run, feats, lats = tmp_path / "flux", tmp_path / "feat_cache", tmp_path / "latent_cache"
    args = _args(data, run, latent_format="flux16", vae=tmp_path / "ae.safetensors", max_steps=3, save_every=0,
                 feature_cache=feats, latent_cache=lats, grad_checkpointing="true", batch_size=8)
    r = _train(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(feats.glob("*.safetensors"))) >= 8 and len(list(lats.glob("*.safetensors"))) == 8
    # precompute completes the caches and packs what the run left loose into shards
    from unifusion_core.train.batches import TensorCache

    pre = subprocess.run([sys.executable, "-m", "unifusion_core.train.precompute", *args], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert pre.returncode == 0, pre.stderr[-3000:]
    assert "packed the loose latents into 1 new shard(s)" in pre.stderr, pre.stderr[-3000:]
    assert not list(lats.glob("*.safetensors")) and len(TensorCache(str(lats))) == 8
    stamp = {p: p.stat().st_mtime_ns for p in lats.rglob("*.safetensors")}
    r = _train(_args(data, tmp_path / "again", latent_format="flux16", vae=tmp_path / "ae.safetensors",
                     max_steps=2, save_every=0, feature_cache=feats, latent_cache=lats))
    assert r.returncode == 0, r.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in lats.rglob("*.safetensors")} == stamp  # reused, not re-encoded
    pipe = UniFusionPipeline.from_files(run / "unifusion.safetensors", data / "vlm", tmp_path / "ae.safetensors")
    assert pipe.config.sampling.latent_format == "flux16"
    assert pipe(Request("red block top left", width=16, height=16, steps=2)).images.shape == (1, 16, 16, 3)


def test_precompute_fills_the_cache_the_trainer_reads_and_snapshots_feed_the_curve(data, tmp_path):
    """`precompute` writes every record's features in every mode training draws, packed into shards; a run
    on that folder computes none itself; --snapshot_every keeps exports that `toy curve` scores strictly."""
    from unifusion_core.train.batches import TensorCache

    feats = tmp_path / "feats"
    pre = subprocess.run([sys.executable, "-m", "unifusion_core.train.precompute",
                          *_args(data, tmp_path / "pre", feature_cache=feats)], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert pre.returncode == 0, pre.stderr[-3000:]
    assert "packed the loose features into 1 new shard(s)" in pre.stderr, pre.stderr[-3000:]
    assert not list(feats.glob("*.safetensors"))  # all packed
    files = {p: p.stat().st_mtime_ns for p in feats.rglob("*.safetensors")}
    assert len(files) == 1 and len(TensorCache(str(feats))) == 4 * 2 + 4  # T2I: raw and VERIFI; edits: raw
    run = tmp_path / "run"
    r = _train(_args(data, run, feature_cache=feats, max_steps=2, save_every=0, snapshot_every=1, recon_share=0,
                     abs_pos_grid=4, vlm_device="cpu"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "frozen VLM on cpu" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in feats.rglob("*.safetensors")} == files  # nothing recomputed
    snaps = sorted(p.name for p in (run / "snapshots").glob("*.safetensors"))
    assert snaps == ["step_0000001.safetensors", "step_0000002.safetensors"]
    assert "dit.abs_pos" in load_file(str(run / "unifusion.safetensors"))
    k = subprocess.run([sys.executable, "-m", "unifusion_core.toy", "curve", str(run), "--vlm", str(data / "vlm"),
                        "--n", "4", "--n-edit", "2"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert k.returncode == 0, k.stderr[-3000:]
    with (run / "curve.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(0 <= float(r[k]) <= 1 for r in rows for k in ("f1", "edit_both", "edit_both_true")), rows
    assert (run / "curve.png").stat().st_size > 0


def test_a_stage_continued_on_another_vlm_of_the_same_shapes_names_that_vlm(data, tmp_path):
    """Stage 4 of the toy model continued the DiT on a retrained VLM: the export must carry the new VLM's
    fingerprint, or loading it with the VLM it was trained on warns 'trained with another VLM'."""
    from unifusion_core.checkpoint import load_checkpoint
    from unifusion_core.vlm import load_vlm

    first = tmp_path / "first"
    assert _train(_args(data, first, max_steps=1, save_every=0)).returncode == 0
    other = build_tiny_vlm("qwen2_5_vl", tmp_path / "other_vlm", seed=7)  # same shapes, other weights
    second = tmp_path / "second"
    r = _train(_args(data, second, max_steps=1, save_every=0, vlm=other, init_from=first / "unifusion.safetensors"))
    assert r.returncode == 0, r.stderr[-3000:]
    old, new = (load_checkpoint(p / "unifusion.safetensors")[0].vlm for p in (first, second))
    assert old.fingerprint == load_vlm(data / "vlm").identity["fingerprint"]
    assert new.fingerprint == load_vlm(other).identity["fingerprint"] != old.fingerprint
    assert new.name == "other_vlm" and "trained with another VLM" in r.stderr  # warned once, at the start


def test_init_from_adds_a_zero_position_table_and_keeps_the_model(data, tmp_path):
    first = tmp_path / "first"
    assert _train(_args(data, first, max_steps=2, save_every=0, abs_pos_grid=0)).returncode == 0
    second = tmp_path / "second"
    r = _train(_args(data, second, max_steps=1, save_every=0, lr=0, warmup_steps=1, ema_decay=0,
                     init_from=first / "unifusion.safetensors", abs_pos_grid=4))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_file(str(first / "unifusion.safetensors")), load_file(str(second / "unifusion.safetensors"))
    assert set(b) - set(a) == {"dit.abs_pos"} and torch.equal(b["dit.abs_pos"], torch.zeros_like(b["dit.abs_pos"]))
    assert all(torch.equal(a[k], b[k]) for k in a)  # lr 0: the loaded weights, unchanged


def test_precision_probe_picks_what_this_machine_runs_faster():
    from unifusion_core.train.precision import _time, choose_precision

    choice = choose_precision("cpu")
    fp32, bf16 = _time(None), _time(torch.bfloat16)
    assert choice in ("no", "bf16")
    if bf16 > 1.5 * fp32:  # clearly slower here (e.g. AVX2-only CPUs emulate bf16): never chosen
        assert choice == "no"
    if bf16 < 0.5 * fp32:
        assert choice == "bf16"


def test_features_over_the_ram_budget_go_to_a_shared_disk_cache_that_the_next_run_reuses(data, tmp_path):
    """feature_cache 'auto' (the default): over the RAM budget the features go to disk next to the manifest,
    and a second run on the same manifest and VLM (another run dir, e.g. an ablation) finds them there."""
    import shutil

    cache_root = data / ".unifusion_cache"
    shutil.rmtree(cache_root, ignore_errors=True)
    first = _train(_args(data, tmp_path / "a", max_steps=2, save_every=0, ram_budget_gb=1e-9), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "feature cache: disk at" in first.stderr and "0 stored already" in first.stderr
    (folder,) = list(cache_root.glob("features-*"))
    stored = len(list(folder.glob("*.safetensors")))
    assert stored >= 4  # at least the probe's records
    second = _train(_args(data, tmp_path / "b", max_steps=2, save_every=0, ram_budget_gb=1e-9), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{stored} stored already" in second.stderr and str(folder) in second.stderr
    roomy = _train(_args(data, tmp_path / "c", max_steps=1, save_every=0), timeout=600)  # default budget: RAM
    assert roomy.returncode == 0 and "feature cache: memory" in roomy.stderr, roomy.stderr[-3000:]
    shutil.rmtree(cache_root, ignore_errors=True)


# --- FSDP2 (--strategy fsdp) on 2 gloo processes -----------------------------------------------------

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
          str(ROOT / "unifusion_core" / "train" / "accelerate_configs" / "cpu_ddp.yaml")]


def _fsdp_args(data, run_dir, **over):
    # 8 steps of 2 x 2 samples, EMA decay 0.9 (far from the raw weights after 8 steps), grads clipped
    return _args(data, run_dir, **{"max_steps": 8, "batch_size": 2, "save_every": 4, "ema_decay": 0.9,
                                   "grad_clip": 0.5, "strategy": "fsdp", "device": "cpu", **over})


def _losses(run_dir):
    with (Path(run_dir) / "log.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _dcp_model(state_dir: Path) -> dict:
    """The model entries of an FSDP state folder's DCP checkpoint, gathered (no process group)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = state_dir / "full.pt"
    dcp_to_torch_save(state_dir / "fsdp", out)
    return torch.load(out, weights_only=False)["model"]


@pytest.fixture(scope="module")
def fsdp_run(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("fsdp") / "run"
    r = subprocess.run([*LAUNCH, "-m", "unifusion_core.train", *_fsdp_args(data, run)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "FSDP2: " in r.stderr and "over 2 processes" in r.stderr
    return run


def test_fsdp_on_two_processes_equals_one_process(data, fsdp_run, tmp_path):
    one = tmp_path / "one"  # the same 4 samples per step in one unsharded process
    r = _train(_fsdp_args(data, one, batch_size=4, strategy="ddp"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((fsdp_run / "state" / "step_0000008" / "fsdp").glob("*.distcp"))) == 2  # a shard per process
    assert np.allclose(_losses(fsdp_run), _losses(one), rtol=1e-5), (_losses(fsdp_run), _losses(one))
    raw_one = load_file(str(one / "state" / "step_0000008" / "model.safetensors"))
    raw_two = _dcp_model(fsdp_run / "state" / "step_0000008")
    assert raw_one.keys() == raw_two.keys(), (sorted(raw_one)[:3], sorted(raw_two)[:3])
    assert max((raw_one[k] - raw_two[k]).abs().max().item() for k in raw_one) < 1e-5
    ema_one, ema_two = (load_file(str(p / "unifusion.safetensors")) for p in (one, fsdp_run))
    assert ema_one.keys() == ema_two.keys()
    assert max((ema_one[k] - ema_two[k]).abs().max().item() for k in ema_one) < 1e-5
    # ... and the exports hold the average, not the raw weights (the checkpoint names them lap.* / dit.*)
    drift = max((ema_two[k] - raw_two[k]).abs().max().item() for k in raw_two if k in ema_two)
    assert drift > 1e-3, drift


def test_fsdp_kill_and_resume_is_bitwise_the_uninterrupted_run(data, fsdp_run, tmp_path):
    run = tmp_path / "killed"
    # rank 0 stops itself after logging step 6 (state saved at 4); rank 1 then waits in a collective
    proc = subprocess.Popen([*LAUNCH, "-m", "unifusion_core.train", *_fsdp_args(data, run, pause_at_step=6)],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not ((run / "log.csv").is_file() and _steps(run)[-1:] == [6]):
            assert proc.poll() is None, f"the FSDP run ended (exit {proc.returncode}) before step 6"
            assert time.time() < deadline, "the FSDP run did not reach step 6 in 10 minutes"
            time.sleep(0.2)
    finally:
        for pid in [proc.pid, *_descendants(proc.pid)]:  # the launcher and both processes
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    assert (run / "state" / "latest").read_text() == "step_0000004" and not (run / "unifusion.safetensors").exists()
    r = subprocess.run([*LAUNCH, "-m", "unifusion_core.train", *_fsdp_args(data, run)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr and _steps(run) == list(range(1, 9))
    a, b = load_file(str(fsdp_run / "unifusion.safetensors")), load_file(str(run / "unifusion.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise on CPU
    assert _losses(run) == _losses(fsdp_run)
