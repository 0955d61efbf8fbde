"""Contract tests for the FLUX.1 autoencoder (``unifusion_core/vae.py``), tiny config, CPU only."""

import json
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from unifusion_core.errors import UniFusionError
from unifusion_core.vae import (
    FluxAEConfig,
    FluxAutoEncoder,
    expected_state_dict_shapes,
    flux_process_in,
    flux_process_out,
    load_flux_vae,
    save_flux_vae,
)

TINY = FluxAEConfig.tiny()


def _tiny_model(seed: int = 0, operations=torch.nn) -> FluxAutoEncoder:
    model = FluxAutoEncoder(TINY, operations=operations)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


def _pixels(b=2, h=24, w=40, seed=1) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _save_raw(path, state, cfg=TINY):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"flux_ae_config": cfg.to_json()})


# ----------------------------------------------------------------------------- layout


def _bfl_layout(ch=128, mult=(1, 2, 4, 4), nrb=2, z=16) -> dict:
    """BFL's ae.safetensors layout spelled out independently of the module code."""
    shapes = {}

    def conv(name, c_in, c_out, k):
        shapes[name + ".weight"], shapes[name + ".bias"] = (c_out, c_in, k, k), (c_out,)

    def norm(name, c):
        shapes[name + ".weight"], shapes[name + ".bias"] = (c,), (c,)

    def resnet(name, c_in, c_out):
        norm(name + ".norm1", c_in), conv(name + ".conv1", c_in, c_out, 3)
        norm(name + ".norm2", c_out), conv(name + ".conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(name + ".nin_shortcut", c_in, c_out, 1)

    def mid(name, c):
        resnet(name + ".block_1", c, c), resnet(name + ".block_2", c, c), norm(name + ".attn_1.norm", c)
        for p in ("q", "k", "v", "proj_out"):
            conv(f"{name}.attn_1.{p}", c, c, 1)

    conv("encoder.conv_in", 3, ch, 3)
    c = ch
    for i, m in enumerate(mult):
        for j in range(nrb):
            resnet(f"encoder.down.{i}.block.{j}", c, ch * m)
            c = ch * m
        if i < len(mult) - 1:
            conv(f"encoder.down.{i}.downsample.conv", c, c, 3)
    mid("encoder.mid", c), norm("encoder.norm_out", c), conv("encoder.conv_out", c, 2 * z, 3)
    conv("decoder.conv_in", z, c, 3), mid("decoder.mid", c)
    for i in reversed(range(len(mult))):
        for j in range(nrb + 1):
            resnet(f"decoder.up.{i}.block.{j}", c, ch * mult[i])
            c = ch * mult[i]
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", c, c, 3)
    norm("decoder.norm_out", c), conv("decoder.conv_out", c, 3, 3)
    return shapes


def test_default_config_is_the_real_flux1_ae_layout():
    shapes = expected_state_dict_shapes(FluxAEConfig())  # built on meta: allocates nothing
    assert shapes == _bfl_layout()
    assert shapes["decoder.conv_in.weight"] == (512, 16, 3, 3)
    assert shapes["encoder.conv_out.weight"] == (32, 512, 3, 3)
    assert shapes["encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert shapes["decoder.up.3.upsample.conv.weight"] == (512, 512, 3, 3)
    assert shapes["decoder.up.0.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert not any("quant_conv" in k for k in shapes)
    # FLUX.1-dev ae.safetensors: 244 tensors, 83,819,683 values
    assert len(shapes) == 244
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 83_819_683


def test_tiny_layout_and_downscale():
    assert expected_state_dict_shapes(TINY) == _bfl_layout(ch=32, mult=(1, 2), nrb=1)
    assert FluxAutoEncoder(TINY, device="meta").downscale == 2
    assert FluxAutoEncoder(FluxAEConfig(), device="meta").downscale == 8


def test_config_validation_and_json():
    assert FluxAEConfig.from_json(TINY.to_json()) == TINY
    with pytest.raises(ValueError, match="divide by 32"):
        FluxAEConfig(ch=8)
    with pytest.raises(ValueError, match="ch_mult"):
        FluxAEConfig(ch_mult=())


# ----------------------------------------------------------------------------- behaviour


def test_encode_decode_shapes_non_square():
    model = _tiny_model()
    with torch.no_grad():
        raw = model.encode(_pixels(h=24, w=40))
        assert raw.shape == (2, 16, 12, 20)
        assert model.decode(raw).shape == (2, 3, 24, 40)
        image = model.decode_to_image(raw)
    assert image.shape == (2, 24, 40, 3) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_image_helpers_use_comfy_conventions():
    model = _tiny_model()
    image = torch.rand(1, 16, 24, 3)  # ComfyUI IMAGE: (B, H, W, C) in [0, 1]
    with torch.no_grad():
        raw = model.encode_image(image)
        assert torch.equal(raw, model.encode(image.movedim(-1, 1) * 2 - 1))
        expected = ((model.decode(raw) + 1) / 2).clamp(0, 1).movedim(1, -1)
        assert torch.equal(model.decode_to_image(raw), expected)


def test_encode_is_the_mean_unless_sampling():
    model = _tiny_model()
    x = _pixels()
    with torch.no_grad():
        mean = model.encode(x)
        assert torch.equal(mean, model.encoder(x)[:, :16])
        a = model.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
        b = model.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, mean)


def test_init_is_deterministic():
    a, b = _tiny_model(seed=5).state_dict(), _tiny_model(seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["decoder.conv_in.weight"], _tiny_model(seed=6).state_dict()["decoder.conv_in.weight"])


def test_bad_inputs_raise():
    model = _tiny_model()
    with pytest.raises(UniFusionError, match="multiples of 2"):
        model.encode(_pixels(h=25, w=40))
    with pytest.raises(UniFusionError, match=r"\(B, 16, H, W\)"):
        model.decode(torch.zeros(1, 4, 8, 8))


def test_bf16_is_close_to_fp32():
    model = _tiny_model()
    raw = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model.decode(raw)
        low = model.to(torch.bfloat16).decode(raw.bfloat16()).float()
    assert (low - ref).abs().max() < 0.1


def test_grad_reaches_every_parameter():
    model = _tiny_model()
    model.decode(model.encode(_pixels(b=1, h=16, w=16))).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_operations_swap_is_used_for_every_layer():
    built = []

    class Conv2d(torch.nn.Conv2d):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    class GroupNorm(torch.nn.GroupNorm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    swapped = _tiny_model(seed=4, operations=SimpleNamespace(Conv2d=Conv2d, GroupNorm=GroupNorm))
    layers = [m for m in swapped.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.GroupNorm))]
    assert layers and all(type(m) in (Conv2d, GroupNorm) for m in layers)
    assert {id(m) for m in layers} == {id(m) for m in built}
    raw = torch.randn(1, 16, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(swapped.decode(raw), _tiny_model(seed=4).decode(raw))


def test_flux_process_in_out():
    x = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(flux_process_in(x), (x - 0.1159) * 0.3611)
    assert torch.equal(flux_process_out(x), x / 0.3611 + 0.1159)
    assert torch.allclose(flux_process_out(flux_process_in(x)), x, atol=1e-6)
    assert torch.allclose(flux_process_in(flux_process_out(x)), x, atol=1e-6)


def test_no_comfy_import():
    assert not any(name == "comfy" or name.startswith("comfy.") for name in sys.modules)
    assert "folder_paths" not in sys.modules


# ----------------------------------------------------------------------------- files


def test_save_load_roundtrip_is_bitwise(tmp_path):
    path = tmp_path / "ae.safetensors"
    model = _tiny_model()
    save_flux_vae(model, path)
    loaded = load_flux_vae(path)
    assert loaded.cfg == TINY
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    raw = torch.randn(1, 16, 6, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.decode(raw), loaded.decode(raw))
    assert load_flux_vae(path, dtype=torch.bfloat16).decoder.conv_in.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("prefix", ["vae.", "first_stage_model."])
def test_prefixed_single_file_checkpoint_loads(tmp_path, prefix):
    path = tmp_path / "single_file.safetensors"
    model = _tiny_model()
    state = {prefix + k: v for k, v in model.state_dict().items()}
    state["model.diffusion_model.img_in.weight"] = torch.zeros(2, 2)  # other components are ignored
    _save_raw(path, state)
    loaded = load_flux_vae(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["ae.ckpt", "ae.pt", "ae.bin", "ae"])
def test_non_safetensors_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not a pickle either")
    with pytest.raises(UniFusionError, match=".safetensors") as err:
        load_flux_vae(path)
    assert str(path) in str(err.value)
    with pytest.raises(UniFusionError, match=".safetensors"):
        save_flux_vae(_tiny_model(), path)


def _assert_load_error(path, pattern):
    with pytest.raises(UniFusionError, match=pattern) as err:
        load_flux_vae(path)
    assert str(path) in str(err.value)


def test_missing_keys(tmp_path):
    path = tmp_path / "ae.safetensors"
    state = _tiny_model().state_dict()
    del state["decoder.conv_in.weight"], state["decoder.conv_in.bias"]
    _save_raw(path, state)
    _assert_load_error(path, r"not a FLUX.1 autoencoder: 2 missing keys such as decoder.conv_in.bias")


def test_unexpected_keys(tmp_path):
    path = tmp_path / "ae.safetensors"
    state = _tiny_model().state_dict()
    state["quant_conv.weight"] = torch.zeros(32, 32, 1, 1)
    _save_raw(path, state)
    _assert_load_error(path, "1 unexpected keys such as quant_conv.weight")


def test_wrong_shape(tmp_path):
    path = tmp_path / "ae.safetensors"
    state = _tiny_model().state_dict()
    state["decoder.conv_in.weight"] = torch.zeros(64, 4, 3, 3)
    _save_raw(path, state)
    expected = r"decoder.conv_in.weight has shape \(64, 4, 3, 3\) but the config expects \(64, 16, 3, 3\)"
    _assert_load_error(path, expected)


def test_no_metadata_means_real_flux1_config(tmp_path):
    path = tmp_path / "ae.safetensors"
    save_file(_tiny_model().state_dict(), str(path))  # tiny tensors, no config: checked against FLUX.1
    _assert_load_error(path, "missing")


@pytest.mark.parametrize("cut", [5, 100, 0.5])
def test_truncated_file(tmp_path, cut):
    path = tmp_path / "ae.safetensors"
    save_flux_vae(_tiny_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    _assert_load_error(path, "corrupt or truncated")


def test_bad_metadata(tmp_path):
    path = tmp_path / "ae.safetensors"
    state = {k: v.contiguous() for k, v in _tiny_model().state_dict().items()}
    save_file(state, str(path), metadata={"flux_ae_config": json.dumps({"ch": 8})})
    _assert_load_error(path, "invalid 'flux_ae_config'")
    save_file(state, str(path), metadata={"flux_ae_config": TINY.to_json(), "format_version": "99"})
    _assert_load_error(path, "format_version")


def test_missing_file(tmp_path):
    _assert_load_error(tmp_path / "nope.safetensors", "no such file")
