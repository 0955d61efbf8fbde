import torch

from unifusion_core import flow


def test_interpolation_endpoints_and_velocity():
    x0, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(flow.interpolate(x0, noise, torch.zeros(2)), x0)
    torch.testing.assert_close(flow.interpolate(x0, noise, torch.ones(2)), noise)
    s = torch.tensor([0.3, 0.7])
    xt = flow.interpolate(x0, noise, s)
    torch.testing.assert_close(xt - s.view(-1, 1, 1, 1) * (noise - x0), x0)  # ComfyUI's calculate_denoised


def test_shift():
    s = torch.linspace(0, 1, 11)
    torch.testing.assert_close(flow.shift_sigma(s, 1.0), s)
    shifted = flow.shift_sigma(s, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted[1:-1] > s[1:-1]).all()
    assert flow.resolution_shift(1024, 1.0, 256) == 2.0


def test_comfy_simple_schedule_shape():
    sig = flow.comfy_simple_sigmas(4, 3.0)
    assert sig.shape == (5,) and sig[0] == 1.0 and sig[-1] == 0.0
    assert (sig[1:] < sig[:-1]).all()
    # step i takes table[-(1 + int(i * 1000 / steps))]; table[k] = shift((k + 1) / 1000)
    torch.testing.assert_close(sig[1], flow.shift_sigma(torch.tensor(750 / 1000), 3.0))


def test_logit_normal_samples_in_range_and_seeded():
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = flow.sample_sigmas(1000, shift=2.0, generator=g1), flow.sample_sigmas(1000, shift=2.0, generator=g2)
    assert torch.equal(a, b) and (a > 0).all() and (a < 1).all()
    assert a.mean() > 0.55  # shift > 1 moves mass towards noise


def test_oracle_velocity_gives_zero_loss_and_exact_euler():
    x0 = torch.randn(1, 3, 4, 4)
    noise = torch.randn(1, 3, 4, 4)

    def oracle(x, t, ctx, mask):  # the true velocity of the straight path through x0
        s = t.view(-1, 1, 1, 1)
        return (x - x0) / s.clamp_min(1e-8)

    loss, per = flow.flow_matching_loss(oracle, x0, None, None, torch.tensor([0.4]), noise)
    assert loss < 1e-10 and per.shape == (1,)
    sigmas = flow.comfy_simple_sigmas(5, 3.0)
    out = flow.euler_sample(oracle, noise, sigmas, None, None)
    torch.testing.assert_close(out, x0, rtol=1e-5, atol=1e-5)


def test_cfg_one_skips_uncond_and_cfg_extrapolates():
    calls = []

    def model(x, t, ctx, mask):
        calls.append(ctx)
        return torch.full_like(x, float(ctx))

    noise = torch.zeros(1, 1, 2, 2)
    sig = flow.comfy_simple_sigmas(2, 1.0)
    flow.euler_sample(model, noise, sig, 1.0, None, 0.0, None, cfg=1.0)
    assert calls == [1.0, 1.0]
    out = flow.euler_sample(model, noise, sig, 1.0, None, 0.0, None, cfg=3.0)
    # v = 0 + (1 - 0) * 3 = 3 everywhere; x goes from 0 at sigma 1 to -3 at sigma 0
    torch.testing.assert_close(out, torch.full_like(noise, -3.0))
