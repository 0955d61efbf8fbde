"""The UniFusion MODEL under ComfyUI's stock sampling machinery: every KSampler sampler, a scheduler
set, custom sampler chains, conditioning nodes, batches and the stock LoRA loader."""
import pytest
import torch

import fixtures
from graphs import edited, n, pixel_graph

# comfy.samplers.KSampler.SAMPLERS of ComfyUI 0.3.64 (a test below checks the host has no others)
SAMPLERS = ['euler', 'euler_cfg_pp', 'euler_ancestral', 'euler_ancestral_cfg_pp', 'heun', 'heunpp2', 'dpm_2',
            'dpm_2_ancestral', 'lms', 'dpm_fast', 'dpm_adaptive', 'dpmpp_2s_ancestral', 'dpmpp_2s_ancestral_cfg_pp',
            'dpmpp_sde', 'dpmpp_sde_gpu', 'dpmpp_2m', 'dpmpp_2m_cfg_pp', 'dpmpp_2m_sde', 'dpmpp_2m_sde_gpu',
            'dpmpp_2m_sde_heun', 'dpmpp_2m_sde_heun_gpu', 'dpmpp_3m_sde', 'dpmpp_3m_sde_gpu', 'ddpm', 'lcm', 'ipndm',
            'ipndm_v', 'deis', 'res_multistep', 'res_multistep_cfg_pp', 'res_multistep_ancestral',
            'res_multistep_ancestral_cfg_pp', 'gradient_estimation', 'gradient_estimation_cfg_pp', 'er_sde', 'seeds_2',
            'seeds_3', 'sa_solver', 'sa_solver_pece', 'ddim', 'uni_pc', 'uni_pc_bh2']
SCHEDULERS = ['simple', 'sgm_uniform', 'karras', 'exponential', 'ddim_uniform', 'beta', 'normal', 'linear_quadratic',
              'kl_optimal']
EXCLUDED: dict[str, str] = {}  # sampler -> reason; none needed on 0.3.64


def _latent(host, graph):
    (lat,) = host.latents(host.run_ok(graph))
    return lat


def _check(lat, batch=1, size=32):
    assert lat.shape == (batch, 3, size, size)
    assert torch.isfinite(lat).all(), "non-finite latent"
    assert lat.std() > 1e-3, "constant latent"


def test_sampler_list_is_current(host):
    info = host.get("/object_info/KSampler")["KSampler"]["input"]["required"]
    assert info["sampler_name"][0] == SAMPLERS and info["scheduler"][0] == SCHEDULERS


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s not in EXCLUDED])
def test_every_sampler(host, sampler):
    _check(_latent(host, pixel_graph(sampler=sampler, steps=3)))


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_schedulers(host, sampler, scheduler):
    _check(_latent(host, pixel_graph(sampler=sampler, scheduler=scheduler, steps=4)))


@pytest.mark.parametrize("sampling_node", ["ModelSamplingAuraFlow", "ModelSamplingSD3"])
def test_custom_sampler_chain(host, sampling_node):
    g = pixel_graph(batch=2)
    del g["6"]
    g.update({"10": n(sampling_node, model=["2", 0], shift=2.0),
              "11": n("CFGGuider", model=["10", 0], positive=["3", 0], negative=["4", 0], cfg=3.0),
              "12": n("BasicScheduler", model=["10", 0], scheduler="simple", steps=3, denoise=1.0),
              "13": n("KSamplerSelect", sampler_name="dpmpp_2m"),
              "14": n("RandomNoise", noise_seed=5),
              "6": n("SamplerCustomAdvanced", noise=["14", 0], guider=["11", 0], sampler=["13", 0], sigmas=["12", 0],
                     latent_image=["5", 0])})
    _check(_latent(host, g), batch=2)


def test_batch_and_different_length_negative(host):
    """batch 2; a negative of another length runs in its own cond batch (CONDRegular, masks kept)."""
    zero_neg = _latent(host, pixel_graph(batch=2))
    long_neg = _latent(host, pixel_graph(batch=2, negative="blurry, low quality, watermark, text, ugly, deformed"))
    _check(zero_neg, batch=2)
    _check(long_neg, batch=2)
    assert not torch.equal(zero_neg[0], zero_neg[1]), "batch items share noise"
    assert (zero_neg - long_neg).abs().max() > 1e-4, "the negative had no effect"


def test_conditioning_combine(host):
    g = pixel_graph()
    g["20"] = n("UniFusionEncode", vlm=["1", 0], pooler=["2", 1], instruction="a green circle, seen from far away",
                system_prompt="", max_pixels=0, max_tiles=0)
    g["21"] = n("ConditioningCombine", conditioning_1=["3", 0], conditioning_2=["20", 0])
    combined = _latent(host, edited(g, **{"6": {"positive": ["21", 0]}}))
    _check(combined)
    assert (combined - _latent(host, pixel_graph())).abs().max() > 1e-4


def test_lora_model_only(host):
    g = pixel_graph()
    g["30"] = n("LoraLoaderModelOnly", model=["2", 0], lora_name=fixtures.LORA_NAME, strength_model=1.0)
    with_lora = _latent(host, edited(g, **{"6": {"model": ["30", 0]}}))
    _check(with_lora)
    assert (with_lora - _latent(host, pixel_graph())).abs().max() > 1e-3, "the LoRA changed nothing"
    assert "lora key not loaded" not in host.log()
