"""Layer selection: the default rule, the accepted specs and their validation errors."""
import pytest

from unifusion_core.errors import UniFusionError
from unifusion_core.vlm import LayerStride, default_layers, select_layers


def test_default_rule_matches_paper():
    assert default_layers(32) == (4, 7, 10, 13, 16, 19, 22, 25, 28, 31)
    assert default_layers(28) == (6, 9, 12, 15, 18, 21, 24, 27)
    assert default_layers(36)[0] == 5 and default_layers(36)[-1] == 35
    assert default_layers(4) == (1, 2, 3, 4)
    assert select_layers(None, 32) == select_layers("default", 32) == default_layers(32)


@pytest.mark.parametrize("spec, expected", [
    ((4, 7, 10), (4, 7, 10)),
    ([0, 28], (0, 28)),
    ("4,7,10", (4, 7, 10)),
    (" 4, 7 ", (4, 7)),
    ("every 3 from 4", tuple(range(4, 29, 3))),
    (LayerStride(3, 4), tuple(range(4, 29, 3))),
    (LayerStride(10), (1, 11, 21)),
])
def test_accepted_specs(spec, expected):
    assert select_layers(spec, 28) == expected


@pytest.mark.parametrize("spec, message", [
    ((4, 40), "layer 40 was requested but this VLM has 28 decoder layers \\(valid: 0..28\\)"),
    ((-1,), "layer -1 was requested"),
    ((7, 4), "unique and increasing"),
    ((4, 4), "unique and increasing"),
    ((), "selects no layer"),
    ("every 3 from 40", "selects no layer"),
    ("4;7", "comma list"),
    ((4.0,), "should be ints"),
    ((True,), "should be ints"),
    (3, "should be None, a list of ints"),
])
def test_invalid_specs(spec, message):
    with pytest.raises(UniFusionError, match=message):
        select_layers(spec, 28)


def test_stride_validation():
    with pytest.raises(UniFusionError, match="step >= 1"):
        LayerStride(0, 4)


def test_features_select_layers():
    import torch

    from unifusion_core.vlm import Features

    hidden = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    f = Features(hidden, torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool),
                 torch.zeros(2, 4, dtype=torch.long), (4, 7, 10))
    sub = f.select((10, 4))
    assert sub.layers == (10, 4)
    assert torch.equal(sub.hidden[:, 0], hidden[:, 2]) and torch.equal(sub.hidden[:, 1], hidden[:, 0])
    assert f.select((4, 7, 10)) is f
    with pytest.raises(UniFusionError, match=r"missing \[13\]"):
        f.select((4, 13))
