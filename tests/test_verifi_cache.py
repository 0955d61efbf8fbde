"""Image-prefix cache: cached == uncached (encode, VERIFI generation, teacher forcing) for every
multimodal family; invalidation by image bytes, detail, system prompt, layers and model; LRU budget."""
import numpy as np
import pytest
import torch
from PIL import Image

from unifusion_core.errors import UniFusionError
from unifusion_core.vlm import FAMILIES, ImageDetail, Prompt, build_tiny_vlm, load_vlm
from unifusion_core.vlm.prefix_cache import PrefixCache
from unifusion_core.vlm.sampling import Sampling

TOL = dict(atol=1e-5, rtol=1e-5)
MULTIMODAL = [f for f in FAMILIES if f != "llm"]
SYSTEM = "Describe the image in detail."


def _image(seed=0, size=(100, 80)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


IMAGES = [_image(0), _image(1, (64, 96))]


@pytest.fixture(scope="module", params=MULTIMODAL)
def encoder(request, tmp_path_factory):
    return load_vlm(build_tiny_vlm(request.param, tmp_path_factory.mktemp(f"pc-{request.param}")))


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return load_vlm(build_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("pc-qwen")))


def _same(a, b):
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.roles, b.roles)
    assert a.generated_ids == b.generated_ids and a.texts == b.texts
    torch.testing.assert_close(a.hidden, b.hidden, **TOL)


def test_cached_equals_uncached_for_encode_generate_and_teacher_forcing(encoder):
    cache = PrefixCache()
    first = Prompt("a red circle", system=SYSTEM, images=IMAGES)
    second = Prompt("a green triangle left of a yellow star", system=SYSTEM, images=IMAGES)
    _same(encoder.encode(first, prefix_cache=cache), encoder.encode(first))
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)
    _same(encoder.encode(second, prefix_cache=cache), encoder.encode(second))  # instruction changed
    sampling = Sampling(max_new_tokens=6, min_new_tokens=6)
    generated = encoder.generate(second, sampling=sampling, prefix_cache=cache)
    _same(generated, encoder.generate(second, sampling=sampling))
    ids = list(generated.generated_ids[0])
    _same(encoder.teacher_force(first, ids, prefix_cache=cache), encoder.teacher_force(first, ids))
    assert (cache.hits, cache.misses, len(cache)) == (3, 1, 1)


def test_changed_prefix_inputs_miss(qwen):
    cache = PrefixCache()
    base = Prompt("a red circle", system=SYSTEM, images=IMAGES)
    qwen.encode(base, prefix_cache=cache)
    changed_pixels = np.array(IMAGES[1])
    changed_pixels[0, 0] ^= 1
    variants = [
        Prompt("a red circle", system=SYSTEM, images=[IMAGES[0], Image.fromarray(changed_pixels)]),
        Prompt("a red circle", system=SYSTEM, images=IMAGES, detail=ImageDetail(max_pixels=56 * 56)),
        Prompt("a red circle", system="Rewrite the request.", images=IMAGES),
        Prompt("a red circle", system=SYSTEM, images=IMAGES[::-1]),
    ]
    for i, prompt in enumerate(variants):
        qwen.encode(prompt, prefix_cache=cache)
        assert cache.misses == i + 2 and cache.hits == 0
    qwen.encode(base, layers=(1, 2), prefix_cache=cache)  # other layers
    assert cache.hits == 0
    other = load_vlm(build_tiny_vlm("qwen2_5_vl", qwen.model.name_or_path))  # same files, new model
    other.encode(base, prefix_cache=cache)
    assert cache.hits == 0
    qwen.encode(Prompt("a blue square", system=SYSTEM, images=IMAGES), prefix_cache=cache)
    assert cache.hits == 1


def test_lru_budget_evicts_and_never_exceeds(qwen):
    probe = PrefixCache()
    qwen.encode(Prompt("x", images=[IMAGES[0]]), prefix_cache=probe)
    one = probe.nbytes
    cache = PrefixCache(max_bytes=int(one * 1.5))
    for seed in range(3):
        qwen.encode(Prompt("x", images=[_image(seed)]), prefix_cache=cache)
        assert cache.nbytes <= cache.max_bytes and len(cache) == 1
    assert cache.evictions == 2
    qwen.encode(Prompt("y", images=[_image(2)]), prefix_cache=cache)  # most recent survives
    assert cache.hits == 1
    tiny = PrefixCache(max_bytes=one - 1)
    qwen.encode(Prompt("x", images=[IMAGES[0]]), prefix_cache=tiny)
    assert len(tiny) == 0 and tiny.nbytes == 0
    with pytest.raises(UniFusionError, match="max_bytes"):
        PrefixCache(max_bytes=-1)


def test_encoder_default_cache_and_cpu_storage(qwen):
    prompt = Prompt("a red circle", system=SYSTEM, images=IMAGES)
    qwen.prefix_cache = PrefixCache(device="cpu")
    try:
        first = qwen.encode(prompt)
        again = qwen.generate(prompt, sampling=Sampling(4, 4))
        assert qwen.prefix_cache.hits == 1 and len(qwen.prefix_cache) == 1
    finally:
        qwen.prefix_cache = None
    _same(first, qwen.encode(prompt))
    _same(again, qwen.generate(prompt, sampling=Sampling(4, 4)))


def test_text_only_prompts_bypass_the_cache(qwen):
    cache = PrefixCache()
    qwen.encode(Prompt("a red circle", system=SYSTEM), prefix_cache=cache)
    qwen.generate(Prompt("a red circle", system=SYSTEM), sampling=Sampling(2), prefix_cache=cache)
    assert (cache.hits, cache.misses, len(cache)) == (0, 0, 0)
