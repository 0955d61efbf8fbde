"""The toy VLM: untrained folder loads through load_vlm, tokenizer covers the language, training
reduces the loss (tiny "test" preset, CPU, a few seconds)."""
import random

import pytest
import torch

from unifusion_core.toy.language import edit_instruction, paraphrase, vocabulary, words
from unifusion_core.toy.tasks import apply_edit
from unifusion_core.toy.toy_vlm import SPECIALS, ToyVLMConfig, build_model, build_tokenizer, build_toy_vlm
from unifusion_core.toy.vlm_train import TASKS, VLMTrainConfig, _encoder, answer_loss, sample_batch
from unifusion_core.toy.world import random_scene, render
from unifusion_core.verifi import PRESETS, system_prompt
from unifusion_core.vlm import load_vlm
from unifusion_core.vlm.features import Role
from unifusion_core.vlm.prompts import Prompt
from unifusion_core.vlm.sampling import Sampling


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_toy_vlm(tmp_path_factory.mktemp("toyvlm"), ToyVLMConfig.preset("test"))


def test_tokenizer_covers_language():
    tok = build_tokenizer()
    unk = tok.convert_tokens_to_ids("<unk>")
    rng = random.Random(0)
    texts = [" ".join(vocabulary()), *PRESETS.values()]
    for _ in range(50):
        scene = random_scene(rng)
        texts.append(paraphrase(scene, rng, rng.choice(("train", "heldout"))))
        kind = rng.choice(("recolor", "move", "resize", "reshape", "background"))
        target, fields = apply_edit(scene, kind, rng)
        texts.append(edit_instruction(kind, scene, rng, **fields))
    for text in texts:
        assert unk not in tok(text, add_special_tokens=False)["input_ids"], text
    sentence = "a large red circle in the top left, a small blue square in the center on a grey background"
    assert tok.decode(tok(sentence, add_special_tokens=False)["input_ids"]) == sentence
    assert all(tok.convert_tokens_to_ids(t) == i for i, t in enumerate(SPECIALS))
    assert len(words(sentence)) == len(tok(sentence, add_special_tokens=False)["input_ids"])


def test_folder_is_portable(folder):
    """transformers 4.57 reads released-Gemma3 key names, rope_theta and a known tokenizer class."""
    import json

    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        vision = [k for k in f.keys() if k.startswith("vision_tower.")]
    assert vision and all(k.startswith("vision_tower.vision_model.") for k in vision)
    assert json.loads((folder / "config.json").read_text())["text_config"]["rope_theta"] == 10000.0
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_folder_loads_and_generates(folder):
    vlm = load_vlm(folder)
    assert vlm.family == "gemma3" and vlm.multimodal
    prompt = Prompt("describe the image.", system_prompt("edit"), [render(random_scene(random.Random(1)))])
    inputs, roles = vlm.build_inputs(prompt)
    assert int((roles == int(Role.IMAGE)).sum()) == ToyVLMConfig.preset("test").image_tokens
    feats = vlm.generate(prompt, sampling=Sampling(max_new_tokens=4))
    assert len(feats.generated_ids[0]) <= 4 and isinstance(feats.texts[0], str)


def test_training_reduces_loss(folder):
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = build_model(ToyVLMConfig.preset("test"), tokenizer).train()
    encoder = _encoder(folder, model, tokenizer)
    batch = sample_batch(encoder, random.Random(0), VLMTrainConfig(batch_size=len(TASKS) * 2))
    assert (batch["labels"] != -100).any() and "pixel_values" in batch
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss, _ = answer_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_augment_drops_only_function_words_and_never_touches_heldout_phrasing():
    from unifusion_core.toy.vlm_train import FUNCTION_WORDS, augment, make_prompt

    rng = random.Random(0)
    dropped = 0
    for _ in range(200):
        scene = random_scene(rng)
        text = paraphrase(scene, rng, "train")
        out = augment(text, rng)
        assert [w for w in out.split() if w not in FUNCTION_WORDS] == \
            [w for w in text.split() if w not in FUNCTION_WORDS]  # content words, in order
        dropped += len(text.split()) - len(out.split())
    assert dropped > 100  # it does drop words
    for task in ("t2i", "edit"):  # the held-out split is the measuring stick: never perturbed
        a, b = random.Random(5), random.Random(5)
        assert make_prompt(task, a, "heldout", augment_share=1.0)[0] == make_prompt(task, b, "heldout")[0]
        changed = sum(make_prompt(task, random.Random(seed), "train", augment_share=1.0)[0].instruction
                      != make_prompt(task, random.Random(seed), "train")[0].instruction for seed in range(20))
        assert changed >= 5, changed


def test_request_order_rewrites_describe_the_same_scene_in_the_request_order():
    from unifusion_core.toy.language import describe, parse_description
    from unifusion_core.toy.vlm_train import make_prompt

    moved = 0
    for seed in range(100):
        p, scene = make_prompt("t2i", random.Random(seed), rewrite_order="request")
        assert parse_description(p.generated) == scene  # the same scene, only listed differently
        moved += p.generated != describe(scene)
        canonical, scene_c = make_prompt("t2i", random.Random(seed))
        assert canonical.generated == describe(scene_c)
    assert moved > 20  # multi-object requests mostly name their objects out of cell order


def test_the_edit_rewrite_style_a_folder_was_trained_with(tmp_path):
    import json
    import random

    from unifusion_core.errors import UniFusionError
    from unifusion_core.toy import lexicon
    from unifusion_core.toy.vlm_train import make_prompt, parse_args, stage_edit_rewrite, trained_edit_rewrite

    assert trained_edit_rewrite(tmp_path) == "target"  # no train_config.json: the original style
    (tmp_path / "train_config.json").write_text(json.dumps({"edit_rewrite": "source_first"}))
    assert trained_edit_rewrite(tmp_path) == "source_first"
    (tmp_path / "train_config.json").write_text(json.dumps({"edit_rewrite": "diff"}))
    with pytest.raises(UniFusionError, match="edit rewrite style"):
        trained_edit_rewrite(tmp_path)
    assert parse_args(["--edit-rewrite", "source_first"]).edit_rewrite == "source_first"
    # a stage continuing a VLM keeps the style it was trained with unless the flag says otherwise
    (tmp_path / "train_config.json").write_text(json.dumps({"edit_rewrite": "in_place"}))
    assert parse_args(["--init-from", str(tmp_path)]).edit_rewrite == "in_place"
    assert parse_args(["--init-from", str(tmp_path), "--edit-rewrite", "target"]).edit_rewrite == "target"
    assert parse_args([]).edit_rewrite == "target"  # from scratch
    assert stage_edit_rewrite(None, tmp_path) == "in_place" and stage_edit_rewrite("target", tmp_path) == "target"
    prompt, target = make_prompt("edit", random.Random(1), edit_rewrite="source_first")
    plain, same = make_prompt("edit", random.Random(1))
    assert target == same and lexicon.EDIT_MARK in prompt.generated and lexicon.EDIT_MARK not in plain.generated
    assert prompt.generated.endswith(plain.generated)


def test_edit_kind_weights_draw_only_the_weighted_kinds_and_bad_weights_are_refused(capsys):
    from unifusion_core.toy.language import EDIT_KINDS, source_part
    from unifusion_core.toy.vlm_train import make_prompt, parse_args

    only_remove = tuple(float(k == "remove") for k in EDIT_KINDS)
    cfg = parse_args(["--edit-kinds", ",".join(map(str, only_remove))])
    assert cfg.edit_kinds == only_remove and parse_args([]).edit_kinds == ()

    def removals(weights):  # the source_first rewrite states the source, so the edit's kind can be read off
        count = 0
        for seed in range(40):
            prompt, target = make_prompt("edit", random.Random(seed), edit_rewrite="source_first", edit_kinds=weights)
            source = source_part(prompt.generated)
            count += len(source.objects) == len(target.objects) + 1 and set(target.objects) < set(source.objects)
        return count

    assert removals(only_remove) == 40
    assert removals(()) < 20  # equal weights: about one edit in seven removes
    for bad in ("1,2", "1,1,1,1,1,1,-1", "0,0,0,0,0,0,0", "a,b,c,d,e,f,g"):
        with pytest.raises(SystemExit):
            parse_args(["--edit-kinds", bad])
        assert "--edit-kinds should be 7 non-negative weights" in capsys.readouterr().err
