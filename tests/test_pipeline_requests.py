"""The standalone API's requests on the shipped toy models: VERIFI in-pass and teacher-forced, the
checkpoint's training size as the default, batched requests equal to single ones, and the CLI."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from unifusion_core import cli
from unifusion_core.condition import VERIFI_ROLES
from unifusion_core.errors import UniFusionError
from unifusion_core.pipeline import Generation, Request, UniFusionPipeline
from unifusion_core.toy.shipped import require_shipped
from unifusion_core.verifi import verifi_prompt
from unifusion_core.vlm.sampling import Sampling

PROMPT = "a large red circle in the top left on a white background"


@pytest.fixture(scope="module")
def pipe():
    checkpoint, vlm = require_shipped()
    return UniFusionPipeline.from_files(checkpoint, vlm)


def test_verifi_request_returns_the_rewrite_and_defaults_to_the_training_size(pipe):
    gen = pipe(Request(PROMPT, verifi=True, steps=2, verifi_sampling=Sampling(max_new_tokens=40)))
    assert isinstance(gen, Generation) and gen.images.shape == (1, 32, 32, 3)  # trained at 32 px
    assert gen.rewrite and "circle" in gen.rewrite
    plain = pipe(Request(PROMPT, steps=2))
    assert plain.rewrite is None and plain.images.shape == (1, 32, 32, 3)
    assert not torch.equal(plain.images, gen.images)  # a different condition (instruction vs generated tokens)


def test_teacher_forced_rewrite_conditions_like_the_generated_one(pipe):
    """The same text, or the same ids, teacher-forced gives the condition the generation gave."""
    sampling = Sampling(max_new_tokens=40)
    prompt = verifi_prompt(PROMPT, cfg=pipe.config)
    feats = pipe.vlm.generate(prompt, pipe.config.vlm.layers, sampling=sampling)
    gen_cond, gen_mask = pipe.condition(feats, VERIFI_ROLES)
    text, ids = feats.texts[0], feats.generated_ids[0]
    for rewrite in (text, ids):
        cond, mask, texts = pipe.encode_verifi([PROMPT], rewrites=[rewrite])
        assert cond.shape == gen_cond.shape and torch.equal(mask, gen_mask)
        torch.testing.assert_close(cond, gen_cond, rtol=1e-4, atol=1e-5)
        assert texts[0].strip() == text.strip()
    a = pipe(Request(PROMPT, verifi=True, seed=3, steps=3, verifi_sampling=sampling))
    b = pipe(Request(PROMPT, rewrite=a.rewrite, seed=3, steps=3))
    assert b.rewrite == a.rewrite
    torch.testing.assert_close(a.images, b.images, rtol=1e-4, atol=1e-4)
    # a different rewrite is a different condition: the given text is what conditions
    c = pipe(Request(PROMPT, rewrite="a small blue square in the bottom right on a black background", seed=3, steps=3))
    assert (c.images - a.images).abs().max() > 0.05


def test_batched_requests_equal_single_requests(pipe):
    reqs = [Request(PROMPT, seed=5, steps=3), Request("a small green triangle in the center on a black background",
                                                      seed=9, steps=3, batch=2)]
    together = pipe.generate(reqs)
    for req, got in zip(reqs, together):
        alone = pipe(req)
        assert got.images.shape == alone.images.shape
        torch.testing.assert_close(got.images, alone.images, rtol=1e-4, atol=1e-4)
    assert not torch.equal(together[1].images[0], together[1].images[1])  # a batch: distinct noise per image


def test_far_size_warns_once(pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="unifusion_core.pipeline"):
        pipe(Request(PROMPT, width=128, height=128, steps=1))
        pipe(Request(PROMPT, width=128, height=128, steps=1))
        pipe(Request(PROMPT, width=32, height=32, steps=1))
    warnings = [r.getMessage() for r in caplog.records if "far from" in r.getMessage()]
    assert len(warnings) == 1 and "128x128" in warnings[0] and "32 px" in warnings[0]


def test_bad_requests_get_one_sentence(pipe):
    with pytest.raises(UniFusionError, match="Request.batch should be >= 1"):
        pipe(Request(PROMPT, batch=0))
    with pytest.raises(UniFusionError, match="takes Request objects"):
        pipe.generate([PROMPT])


def test_cli_verifi_and_given_rewrite(tmp_path, capsys):
    checkpoint, vlm = require_shipped()
    base = ["generate", "--checkpoint", str(checkpoint), "--vlm", str(vlm), "--prompt", PROMPT, "--steps", "3"]
    assert cli.main([*base, "--verifi", "--max-rewrite-tokens", "40", "--out", str(tmp_path / "x.png")]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("rewrite (VERIFI): "))
    rewrite = line.split(": ", 1)[1]
    assert "circle" in rewrite
    x = np.asarray(Image.open(tmp_path / "x.png"))
    assert x.shape == (32, 32, 3) and "32x32" in out
    assert cli.main([*base, "--rewrite", rewrite, "--out", str(tmp_path / "y.png")]) == 0
    assert f"rewrite (given): {rewrite}" in capsys.readouterr().out
    y = np.asarray(Image.open(tmp_path / "y.png"))
    assert np.abs(x.astype(int) - y.astype(int)).max() <= 1  # the same condition, the same seed
    assert cli.main([*base, "--rewrite", "  ", "--out", str(tmp_path / "z.png")]) == 2
    assert "--rewrite needs the text" in capsys.readouterr().err
