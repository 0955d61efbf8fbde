import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from tiny import TINY_VLM, randomize_, tiny_config, tiny_modules
from unifusion_core.checkpoint import (check_vlm, load_checkpoint, load_modules, read_config, retarget_vlm,
                                      save_checkpoint)
from unifusion_core.config import UniFusionConfig
from unifusion_core.errors import UniFusionError


@pytest.fixture
def saved(tmp_path):
    cfg, pooler, dit = tiny_modules(replace(tiny_config(), system_prompts={"t2i": "Describe the image."}))
    randomize_(dit)
    randomize_(pooler, seed=5)
    path = tmp_path / "uf.safetensors"
    save_checkpoint(path, cfg, pooler, dit)
    return path, cfg, pooler, dit


def test_round_trip_is_bitwise(saved):
    path, cfg, pooler, dit = saved
    cfg2, pooler2, dit2 = load_modules(path)
    assert cfg2 == cfg and cfg2.system_prompts == {"t2i": "Describe the image."}
    for a, b in ((pooler, pooler2), (dit, dit2)):
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), k
    x, t, ctx = torch.randn(1, 3, 8, 8), torch.tensor([0.5]), torch.randn(1, 3, cfg.dit.cond_dim)
    assert torch.equal(dit(x, t, ctx), dit2(x, t, ctx))
    assert not path.with_name(path.name + ".tmp").exists()


def test_metadata_holds_config_and_versions(saved):
    from safetensors import safe_open

    path, cfg, *_ = saved
    meta = safe_open(str(path), "pt").metadata()
    assert json.loads(meta["unifusion_config"])["vlm"]["layers"] == list(cfg.vlm.layers)
    assert meta["format_version"] == "1" and meta["package_version"]
    assert read_config(path) == cfg


def test_load_casts_dtype(saved):
    path, *_ = saved
    _, state = load_checkpoint(path, dtype=torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in state["dit"].values())


def test_vlm_mismatch_names_both(saved):
    path, cfg, *_ = saved
    other = {"architecture": "Qwen2_5_VLForConditionalGeneration", "num_layers": 36, "hidden_size": 4096}
    with pytest.raises(UniFusionError) as err:
        check_vlm(cfg, other)
    msg = str(err.value)
    assert "4-layer x 64" in msg and "36 x 4096" in msg and "Qwen2_5_VL" in msg
    check_vlm(cfg, {"architecture": TINY_VLM.architecture, "num_layers": 4, "hidden_size": 64})


def _rewrite(path, tensors=None, meta=None):
    t = load_file(str(path))
    from safetensors import safe_open

    m = safe_open(str(path), "pt").metadata()
    save_file(tensors(t) if tensors else t, str(path), metadata=meta(m) if meta else m)


@pytest.mark.parametrize("case,pattern", [
    ("missing", "missing 1 tensors such as dit.proj_out.bias"),
    ("unexpected", "unexpected tensors such as dit.extra"),
    ("shape", "has shape"),
    ("foreign", "unexpected tensor 'model.x'"),
    ("no_meta", "not a UniFusion checkpoint"),
    ("bad_json", "malformed"),
    ("future", "newer than this package"),
    ("truncated", "not a readable safetensors"),
    ("pickle", "only .safetensors"),
    ("absent", "no such checkpoint"),
    ("nan", "tensor dit.proj_out.weight holds NaN or infinite values"),
    ("inf_fp16", "tensor lap."),
])
def test_errors_are_one_sentence_with_path(saved, case, pattern):
    path = saved[0]
    if case == "missing":
        _rewrite(path, tensors=lambda t: {k: v for k, v in t.items() if k != "dit.proj_out.bias"})
    elif case == "unexpected":
        _rewrite(path, tensors=lambda t: {**t, "dit.extra": torch.zeros(1)})
    elif case == "shape":
        _rewrite(path, tensors=lambda t: {**t, "dit.proj_out.bias": torch.zeros(5)})
    elif case == "foreign":
        _rewrite(path, tensors=lambda t: {**t, "model.x": torch.zeros(1)})
    elif case == "no_meta":
        _rewrite(path, meta=lambda m: {"format": "pt"})
    elif case == "bad_json":
        _rewrite(path, meta=lambda m: {**m, "unifusion_config": "{not json"})
    elif case == "future":
        _rewrite(path, meta=lambda m: {**m, "format_version": "99"})
    elif case == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif case == "pickle":
        path = path.with_suffix(".ckpt")
        torch.save({}, path)
    elif case == "absent":
        path = path.with_name("nope.safetensors")
    elif case == "nan":
        _rewrite(path, tensors=lambda t: {**t, "dit.proj_out.weight": t["dit.proj_out.weight"].index_fill(0, torch.tensor([0]), float("nan"))})
    elif case == "inf_fp16":
        _rewrite(path, tensors=lambda t: {k: (v.half().index_fill(0, torch.tensor([0]), float("inf")) if k.startswith("lap.") and v.is_floating_point() else v) for k, v in t.items()})
    with pytest.raises(UniFusionError) as err:
        load_modules(path)
    msg = str(err.value)
    assert pattern in msg and str(path) in msg and msg.count("\n") == 0


def test_config_json_round_trip_and_validation():
    cfg = tiny_config("flux16")
    assert UniFusionConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(UniFusionError, match="channels"):
        replace(cfg, sampling=replace(cfg.sampling, latent_format="pixel"))
    with pytest.raises(UniFusionError, match="divisible"):
        replace(cfg.dit, num_heads=5)
    with pytest.raises(UniFusionError, match="unknown preset"):
        UniFusionConfig.preset("huge", TINY_VLM)
    raw = json.loads(cfg.to_json())
    raw["dit"]["bogus"] = 1
    with pytest.raises(UniFusionError, match="unknown fields"):
        UniFusionConfig.from_json(json.dumps(raw))


def test_presets_scale_as_documented():
    from unifusion_core.checkpoint import build_modules
    from unifusion_core.config import PAPER_VLM

    sizes = {}
    for name in ("small", "base", "paper"):
        with torch.device("meta"):
            _, dit = build_modules(UniFusionConfig.preset(name, PAPER_VLM))
        sizes[name] = sum(p.numel() for p in dit.parameters()) / 1e9
    assert 0.4 < sizes["small"] < 0.6 and 1.8 < sizes["base"] < 2.5 and 7.5 < sizes["paper"] < 8.8
    assert UniFusionConfig.preset("paper", PAPER_VLM).vlm.layers == (4, 7, 10, 13, 16, 19, 22, 25, 28, 31)


def test_presets_are_typed_and_refuse_a_width_their_heads_do_not_divide():
    from unifusion_core.config import PRESETS, LAPConfig, Preset, VLMSpec

    assert all(isinstance(p, Preset) and p.name == n for n, p in PRESETS.items())
    odd = VLMSpec("X", 8, 48, (2, 5))  # 48 is not a multiple of the paper preset's 32 LAP heads
    with pytest.raises(UniFusionError, match="32 heads at width 48") as err:
        UniFusionConfig.preset("paper", odd)
    assert str(err.value).count("\n") == 0
    lap = LAPConfig(in_dim=48, num_layers=2, width=48, heads=4, out_dim=4096)
    assert UniFusionConfig.preset("paper", odd, lap=lap).lap.heads == 4  # an explicit pooler is taken as given
    toy = UniFusionConfig.preset("toy", odd)
    assert (toy.lap.width, toy.lap.heads, toy.dit.abs_pos_grid) == (128, 4, 8)


def test_error_type_has_a_short_stable_name():
    """ComfyUI shows an uncaught error's type as module + name; under a custom-node package the module
    would be '<pack folder>.unifusion_core.errors'."""
    assert f"{UniFusionError.__module__}.{UniFusionError.__qualname__}" == "unifusion.UniFusionError"
    assert issubclass(UniFusionError, ValueError)


def test_retarget_vlm_names_the_new_vlm_and_keeps_weights_and_metadata(saved, caplog):
    from safetensors import safe_open

    path, cfg, *_ = saved
    before, meta = load_file(str(path)), safe_open(str(path), "pt").metadata()
    same = {"architecture": cfg.vlm.architecture, "num_layers": cfg.vlm.num_layers,
            "hidden_size": cfg.vlm.hidden_size, "fingerprint": "abc123"}
    retarget_vlm(path, same, "vlm-next")
    after, meta2 = load_file(str(path)), safe_open(str(path), "pt").metadata()
    assert read_config(path).vlm == replace(cfg.vlm, fingerprint="abc123", name="vlm-next")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert meta2["vlm_retargeted_from"] == cfg.vlm.fingerprint and meta2["package_version"] == meta["package_version"]
    with caplog.at_level("WARNING"):
        check_vlm(read_config(path), same)  # the named VLM no longer warns
    assert "another VLM" not in caplog.text
    with pytest.raises(UniFusionError, match="expects a"):
        retarget_vlm(path, {**same, "hidden_size": cfg.vlm.hidden_size + 1}, "other")
    assert read_config(path).vlm.name == "vlm-next"  # a refused retarget leaves the file as it was
