"""A further toy stage on a new VLM: the VLM keeps its training history and ships with the DiT."""
import logging

from unifusion_core.toy import recipe
from unifusion_core.toy.vlm_train import VLMTrainConfig, train


def test_a_vlm_stage_continues_the_log_and_ships_with_it(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)  # what the CLI sets: the stage's log lines reach train.log
    first, second = tmp_path / "runs" / "vlm1", tmp_path / "runs" / "vlm2"
    train(VLMTrainConfig(out=str(first), preset="test", max_steps=2, log_every=1, batch_size=2))
    train(VLMTrainConfig(out=str(second), preset="test", max_steps=3, log_every=1, batch_size=2, init_from=str(first)))
    log = (second / "train.log").read_text().splitlines()
    heads = [ln for ln in log if ln.startswith("# stage ")]
    assert [h.split(" (")[0] for h in heads] == ["# stage 1", "# stage 2"] and "--init-from stage 1" in heads[1]
    assert log[:len((first / "train.log").read_text().splitlines())] == (first / "train.log").read_text().splitlines()
    assert [ln.split()[1] for ln in log[log.index(heads[1]) + 1:] if ln.startswith("step ")] == ["1", "2", "3"]

    shipped = tmp_path / "models" / "unifusion-toy-vlm"
    shipped.mkdir(parents=True)
    (shipped / "stale.json").write_text("{}")
    monkeypatch.setattr(recipe, "VLM_DIR", shipped)
    recipe._ship_vlm(second)
    assert (shipped / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert (shipped / "train.log").read_text() == (second / "train.log").read_text()
    assert not (shipped / "stale.json").exists()  # the folder is the new one, not a merge
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["unifusion-toy-vlm"]  # no .new / .old left


def test_a_warm_start_refuses_a_folder_with_other_word_ids(tmp_path):
    """A warm start keeps the embedding rows: a folder whose tokenizer numbers the words differently
    (a word added to lexicon.py shifts every later id) is refused in one sentence, never trained on."""
    import json
    import shutil

    import pytest

    from unifusion_core.errors import UniFusionError

    first = tmp_path / "vlm1"
    train(VLMTrainConfig(out=str(first), preset="test", max_steps=1, batch_size=2, precision="fp32"))
    shifted = tmp_path / "shifted"
    shutil.copytree(first, shifted)
    tok = json.loads((shifted / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = "circle", "square"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (shifted / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(UniFusionError, match="circle.*wrong embedding rows"):
        train(VLMTrainConfig(out=str(tmp_path / "out"), preset="test", max_steps=1, batch_size=2, init_from=str(shifted)))
    assert not (tmp_path / "out" / "model.safetensors").exists()
    train(VLMTrainConfig(out=str(tmp_path / "ok"), preset="test", max_steps=1, batch_size=2, init_from=str(first)))


def test_gpu_stage_parts_run_at_smoke_size_and_leave_what_comes_back(tmp_path):
    """The prepared GPU stage (toy/gpu_stage.py) on this CPU at tiny sizes: each part leaves at most eight
    files of at most 16 MB (what the device machine sends back), and the VLM's tar unpacks into a folder
    the DiT part trains on."""
    import subprocess
    import sys
    import tarfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}

    def part(*args):
        r = subprocess.run([sys.executable, "-m", "unifusion_core.toy.gpu_stage", *args, "--work", str(tmp_path / "work"),
                            "--smoke"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]

    part("vlm", "--out", str(tmp_path / "out_vlm"), "--edit_kinds", "0,0,0,0,1,0,0")
    import json
    assert json.loads((tmp_path / "out_vlm" / "vlm_stage.json").read_text())["config"]["edit_kinds"] == [0, 0, 0, 0, 1, 0, 0]
    bad = subprocess.run([sys.executable, "-m", "unifusion_core.toy.gpu_stage", "vlm", "--out", str(tmp_path / "x"),
                          "--mix", "1,1"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--mix should be 5 non-negative weights" in bad.stderr, bad.stderr[-2000:]
    with tarfile.open(tmp_path / "out_vlm" / "vlm.tar") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert (tmp_path / "unpacked" / "vlm" / "train.log").read_text().count("# stage ") >= 2  # the history travels
    part("dit", "--out", str(tmp_path / "out_dit"), "--vlm", str(tmp_path / "unpacked" / "vlm"))
    for folder, names in (("out_vlm", {"vlm.tar", "vlm_eval.json", "vlm_stage.json"}),
                          ("out_dit", {"unifusion-toy.safetensors", "curve.csv", "curve.png", "log.csv", "dit_stage.json"})):
        files = list((tmp_path / folder).iterdir())
        assert {f.name for f in files} == names and all(f.stat().st_size <= 16 * 2 ** 20 for f in files)


def test_ship_vlm_refuses_a_folder_that_is_not_a_vlm_and_touches_nothing(tmp_path):
    import hashlib
    import subprocess
    import sys
    from pathlib import Path

    from unifusion_core.toy.shipped import CHECKPOINT, VLM_DIR

    def digest():
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in (CHECKPOINT, VLM_DIR / "model.safetensors")]

    before = digest()
    (tmp_path / "notes.txt").write_text("not a model")
    r = subprocess.run([sys.executable, "-m", "unifusion_core.toy", "ship-vlm", str(tmp_path)],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr and str(tmp_path) in r.stderr, r.stderr[-2000:]
    assert digest() == before


def test_ship_vlm_only_with_other_shapes_leaves_checkpoint_and_shipped_vlm_as_they_were(tmp_path, monkeypatch):
    """The retarget runs after the copy and before the swap: a VLM of other shapes (the test preset,
    against the toy checkpoint) is refused in one sentence, the copy is removed, the shipped folder and
    the checkpoint are byte for byte what they were."""
    import pytest

    from unifusion_core.errors import UniFusionError

    other = tmp_path / "runs" / "vlm"
    train(VLMTrainConfig(out=str(other), preset="test", max_steps=1, log_every=1, batch_size=2))
    ckpt, shipped = _shipped_pair_in(tmp_path, monkeypatch)
    (shipped / "model.safetensors").write_bytes(b"the shipped one")
    before = ckpt.read_bytes()
    with pytest.raises(UniFusionError):
        recipe.ship_vlm_only(other)
    assert ckpt.read_bytes() == before
    assert (shipped / "model.safetensors").read_bytes() == b"the shipped one"
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["unifusion-toy-vlm", "unifusion-toy.safetensors"]


def test_ship_vlm_only_whose_copy_fails_leaves_the_checkpoint_unretargeted(tmp_path, monkeypatch):
    """A copy that fails (a full disk) happens before the checkpoint is touched: the pair stays as shipped."""
    import pytest

    from unifusion_core.toy.shipped import VLM_DIR

    ckpt, _ = _shipped_pair_in(tmp_path, monkeypatch)

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recipe.shutil, "copytree", full_disk)
    before = ckpt.read_bytes()
    with pytest.raises(OSError):
        recipe.ship_vlm_only(VLM_DIR)
    assert ckpt.read_bytes() == before


def _shipped_pair_in(tmp_path, monkeypatch):
    """A copy of the shipped checkpoint and an empty shipped-VLM folder under ``tmp_path``, put in place
    of the real ones for ``recipe``'s ship functions: -> (checkpoint, VLM folder)."""
    import shutil

    from unifusion_core.toy.shipped import CHECKPOINT

    ckpt, shipped = tmp_path / "models" / "unifusion-toy.safetensors", tmp_path / "models" / "unifusion-toy-vlm"
    shipped.mkdir(parents=True)
    shutil.copyfile(CHECKPOINT, ckpt)
    monkeypatch.setattr(recipe, "CHECKPOINT", ckpt)
    monkeypatch.setattr(recipe, "VLM_DIR", shipped)
    return ckpt, shipped


def test_a_soup_is_the_mean_of_its_members_and_keeps_their_history(tmp_path, caplog):
    import torch
    from safetensors.torch import load_file

    from unifusion_core.toy.vlm_train import soup
    from unifusion_core.vlm import load_vlm

    caplog.set_level(logging.INFO)
    base, a, b = tmp_path / "base", tmp_path / "a", tmp_path / "b"
    train(VLMTrainConfig(out=str(base), preset="test", max_steps=2, log_every=1, batch_size=2))
    for out, seed in ((a, 1), (b, 2)):
        train(VLMTrainConfig(out=str(out), preset="test", max_steps=2, log_every=1, batch_size=2, seed=seed,
                             init_from=str(base)))
    out = soup(tmp_path / "soup", [a, b])
    wa, wb, ws = (load_file(p / "model.safetensors") for p in (a, b, out))
    assert ws.keys() == wa.keys()
    moved = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert moved  # the members differ, so the mean is neither of them
    for k in wa:
        assert torch.allclose(ws[k].double(), (wa[k].double() + wb[k].double()) / 2, atol=1e-6), k
    emb = next(k for k in ws if k.endswith("embed_tokens.weight"))
    loaded = load_vlm(str(out)).model.get_input_embeddings().weight  # the loader reads the mean
    assert torch.equal(loaded.detach().float(), ws[emb].float()) and not torch.equal(ws[emb], wa[emb])
    log = (out / "train.log").read_text().splitlines()
    assert log[:len((a / "train.log").read_text().splitlines())] == (a / "train.log").read_text().splitlines()
    heads = [ln.split(" (")[0] for ln in log if ln.startswith("# stage ")]
    assert heads == ["# stage 1", "# stage 2", "# stage 3"] and "soup" in log[-1]
    assert any(ln.startswith("# member stage 2") for ln in log)  # b's own stage, not counted as the soup's
    assert sum(ln.startswith("step ") for ln in log) == 2 + 2 + 2  # base, a's stage and b's stage, once each


def test_a_soup_refuses_members_that_differ_and_writes_nothing(tmp_path):
    import json
    import shutil

    import pytest

    from unifusion_core.errors import UniFusionError
    from unifusion_core.toy.toy_vlm import ToyVLMConfig, build_toy_vlm
    from unifusion_core.toy.vlm_train import soup

    a = build_toy_vlm(tmp_path / "a", ToyVLMConfig.preset("test"))
    wide = build_toy_vlm(tmp_path / "wide", ToyVLMConfig(**{**vars(ToyVLMConfig.preset("test")), "intermediate_size": 96}))
    with pytest.raises(UniFusionError, match="same sizes"):
        soup(tmp_path / "s1", [a, wide])
    other = tmp_path / "other"
    shutil.copytree(a, other)
    (other / "train_config.json").write_text(json.dumps({"edit_rewrite": "source_first"}))
    with pytest.raises(UniFusionError, match="edit rewrite style"):
        soup(tmp_path / "s2", [a, other])
    with pytest.raises(UniFusionError, match="two or more"):
        soup(tmp_path / "s3", [a])
    with pytest.raises(UniFusionError, match="already exists"):
        soup(other, [a, a])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "other", "wide"]  # no soup, no partial folder
