"""Shapes-world language: canonical descriptions and their parser, paraphrase splits, vocabulary."""
import random

from unifusion_core.toy import lexicon
from unifusion_core.toy.language import (COMPOSE_KINDS, compose_instruction, describe, paraphrase,
                                         paraphrase_traced, parse_description, template_names, vocabulary, words)
from unifusion_core.toy.tasks import edit_example
from unifusion_core.toy.world import Obj, Scene, random_scene

SCENES = [random_scene(random.Random(s)) for s in range(300)]


def test_canonical_description_parses_back():
    s = Scene("grey", (Obj("circle", "red", "large", 0, 0), Obj("square", "blue", "small", 1, 1)))
    assert describe(s) == "a large red circle in the top left and a small blue square in the center on a grey background"
    for scene in SCENES + [Scene("white", ())]:
        assert parse_description(describe(scene)) == scene
    assert parse_description("  A large red circle in the top left on a grey background. ") is not None


def test_parser_rejects_non_canonical_text():
    for text in ("", "a red circle", "a large red circle in the top left on a pink background",
                 "a large red circle in the top left and a small red circle in the top left on a grey background",
                 "a large red disc in the top left on a grey background"):
        assert parse_description(text) is None


def test_paraphrase_is_deterministic_per_seed_and_varied():
    scene = SCENES[7]
    for split in ("train", "heldout"):
        assert paraphrase(scene, random.Random(11), split) == paraphrase(scene, random.Random(11), split)
        assert len({paraphrase(scene, random.Random(k), split) for k in range(40)}) > 10


def test_heldout_templates_are_disjoint_from_train():
    train, held = template_names("train"), template_names("heldout")
    assert held and not train & held
    for n, scene in enumerate(SCENES[:100]):
        _, trace = paraphrase_traced(scene, random.Random(n), "train")
        assert set(trace) <= train
        text, trace = paraphrase_traced(scene, random.Random(n), "heldout")
        assert trace[0] in lexicon.SCENE_TEMPLATES["heldout"]
        assert text not in {paraphrase(scene, random.Random(k), "train") for k in range(100)}


def test_heldout_phrases_never_occur_inside_train_text():
    """The held-out split stays unseen as text, not only by template name: a pattern per held-out form
    (position phrases, object / background / scene frames, edit wordings) matches held-out prompts and
    none of thousands of train-split prompts (paraphrases and edit instructions)."""
    import re

    colours = "|".join(w for ws in lexicon.COLOR_WORDS.values() for w in ws)
    nouns = "|".join(noun for _, noun in lexicon.COLOR_THINGS.values())
    forms = {"position": "|".join(re.escape(p) for c in lexicon.POSITIONS["heldout"].values() for p in c),
             "noun coloured": rf"\b({nouns}) coloured\b", "in colour": rf"\bin ({colours})\b",
             "background first": r"\bbackground is [a-z ]+ and there is\b", "on bg there is": r"background there is\b",
             "relation before": r", (to the (left|right) of|above|below)\b",
             "colour the": r"^(colour|color) the ", "make the colour of": r"^make the (colour|color) of ",
             "put at": r"^put the [a-z ]+ at the [a-z ]+(?<! away)$", "make small": r"^make the [a-z ]+ (small|little|large|big)$",
             "to the image": r"to the image$", "take away": r"^take the [a-z ]+ away$",
             "make into": r"^make the [a-z ]+ into ", "paint background": r"^paint the background (?!the )"}

    def prompts(split, n):
        rng = random.Random(f"unseen-{split}")
        texts = [paraphrase(s, rng, split) for s in SCENES for _ in range(n)]
        return texts + [p for _ in range(300 * n) for p in edit_example(rng, split=split)["prompts"]]

    train, held = prompts("train", 6), prompts("heldout", 3)
    for name, pattern in forms.items():
        rx = re.compile(pattern)
        assert any(rx.search(t) for t in held), name  # the pattern does find its held-out form
        seen = [t for t in train if rx.search(t)]
        assert not seen, (name, seen[:3])


def _texts(split, n):
    rng = random.Random(split)
    out = [paraphrase(s, rng, split) for s in SCENES[:n]]
    return out + [p for k in range(n) for p in edit_example(rng, split=split, n_prompts=2)["prompts"]]


def test_heldout_uses_only_train_words_and_vocabulary_is_closed():
    train, held = _texts("train", 300), _texts("heldout", 150)
    train_words = {w for t in train for w in words(t)}
    held_words = {w for t in held for w in words(t)}
    assert held_words <= train_words, held_words - train_words
    vocab = set(vocabulary())
    extra = [compose_instruction(k, random.Random(0)) for k in COMPOSE_KINDS] + [describe(s) for s in SCENES]
    assert train_words | held_words | {w for t in extra for w in words(t)} <= vocab
    assert len(vocab) < 150


def test_indirect_colour_references_occur():
    blue = Scene("grey", (Obj("circle", "blue", "large", 1, 1),))
    texts = {paraphrase(blue, random.Random(k)) for k in range(60)}
    assert any("the sky" in t for t in texts)
    assert any(" blue " in t for t in texts)


def test_paraphrase_ordered_names_the_objects_in_the_order_the_text_does():
    """The request-order rewrite (vlm_train --rewrite-order request) relies on it: the objects come back
    in the order the paraphrase mentions them, checked by where each object's colour is first named."""
    from unifusion_core.toy.language import describe_in_order, paraphrase_ordered

    def colour_at(text, colour):
        forms = [f" {w} " for w in lexicon.COLOR_WORDS[colour]] + [f" {t} " for t in lexicon.COLOR_THINGS[colour]]
        return min(i for i in (f" {text} ".find(f) for f in forms) if i >= 0)

    checked = frames = 0
    for n, scene in enumerate(SCENES):
        colours = [o.color for o in scene.objects] + [scene.background]
        if len(scene.objects) < 2 or len(set(colours)) != len(colours):
            continue
        for split in ("train", "heldout"):
            text, trace, order = paraphrase_ordered(scene, random.Random(f"order-{n}"), split)
            assert (text, trace) == paraphrase_traced(scene, random.Random(f"order-{n}"), split)
            assert sorted(order, key=lambda o: o.cell) == list(scene.objects)  # a permutation
            where = [colour_at(text, o.color) for o in order]
            assert where == sorted(where), (text, [o.color for o in order])
            assert parse_description(describe_in_order(scene, order)) == scene
            checked += 1
            frames += trace[0].startswith("rel_")
    assert checked > 100 and frames > 20  # the relational frames (rel_before names its 2nd object first) too
