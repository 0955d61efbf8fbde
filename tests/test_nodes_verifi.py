"""VERIFI node settings that run without ComfyUI: the system-prompt preset widget and sampling widgets."""
import importlib
import logging
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_nodes_common import pack  # noqa: E402,F401  (fixture: the repo imported as a package)


@pytest.fixture(scope="module")
def common(pack):  # noqa: F811
    return importlib.import_module(f"{pack}.nodes.common")


@pytest.fixture(scope="module")
def verifi(pack):  # noqa: F811
    return importlib.import_module(f"{pack}.unifusion_core.verifi")


class _Cfg:
    def __init__(self, prompts):
        self.system_prompts = prompts


def test_presets_cover_the_core_tasks(common, verifi):
    assert set(common.SYSTEM_PRESETS) == {"checkpoint default", "custom", *verifi.TASKS}


@pytest.mark.parametrize("count,task", [(0, "t2i"), (1, "edit"), (3, "multi_ref")])
def test_checkpoint_default_follows_image_count(common, verifi, count, task):
    assert common.verifi_system("checkpoint default", "", count) == verifi.PRESETS[task]
    trained = _Cfg({task: "  trained prompt  "})
    assert common.verifi_system("checkpoint default", "", count, trained) == "trained prompt"


def test_named_preset_and_custom(common, verifi):
    trained = _Cfg({"t2i": "trained"})
    assert common.verifi_system("edit", "", 0, trained) == verifi.PRESETS["edit"]
    assert common.verifi_system("custom", "  my rewriter  ", 2) == "my rewriter"


def test_custom_without_text_is_one_sentence(common):
    with pytest.raises(ValueError, match=r"^The system prompt preset is 'custom' but the custom system text is empty"):
        common.verifi_system("custom", "   ", 0)


def test_custom_text_with_other_preset_warns(common, verifi, caplog):
    with caplog.at_level(logging.WARNING):
        assert common.verifi_system("t2i", "ignored", 0) == verifi.PRESETS["t2i"]
    assert "custom system text is ignored" in caplog.text


def test_unknown_preset(common):
    with pytest.raises(ValueError, match="should be one of 'checkpoint default'"):
        common.verifi_system("nope", "", 0)


def test_make_sampling(common):
    greedy = common.make_sampling("greedy", 64, 0.7, 0.9, 123)
    assert greedy.greedy and greedy.max_new_tokens == 64 and greedy.seed == 0  # greedy: seed does not matter
    s = common.make_sampling("sample", 32, 0.8, 0.95, 2**63 + 5)
    assert (s.temperature, s.top_p, s.seed, s.max_new_tokens) == (0.8, 0.95, 2**63 + 5, 32)
    with pytest.raises(ValueError, match="temperature above 0"):
        common.make_sampling("sample", 32, 0.0, 0.9, 1)
    with pytest.raises(ValueError, match="Decoding should be one of 'greedy', 'sample'"):
        common.make_sampling("beam", 32, 0.7, 0.9, 1)


def test_preset_that_does_not_fit_the_image_count_warns(common, verifi, caplog):
    with caplog.at_level(logging.WARNING):
        assert common.verifi_system("edit", "", 0) == verifi.PRESETS["edit"]  # an edit without a reference
    assert "'edit' but the request has 0 reference image(s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        common.verifi_system("edit", "", 1)
        common.verifi_system("multi_ref", "", 3)
        common.verifi_system("t2i", "", 0)
    assert "reference image(s)" not in caplog.text
