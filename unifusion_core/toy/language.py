"""The shapes-world language: canonical descriptions, their parser, seeded paraphrases, vocabulary.

Canonical description (the VERIFI rewrite target and the toy VLM's caption format), objects in
cell order (row-major)::

    a large red circle in the top left and a small blue square in the center on a grey background
    a small green cross in the top right, a large red circle in the center and a small ... on a ...
    an empty white background                                          (a scene without objects)

``parse_description`` inverts it exactly (case, surrounding spaces and a final period are ignored).
An edit rewrite in the ``source_first`` style (``edit_rewrite``) states the source first::

    a large red circle in the top left on a grey background. edited: a large blue circle in the top left on ...

and parses to the scene after the mark (the edited image); the target lists its objects in the source's
order (``in_place``: a moved object keeps its place in the text, an added one comes last). The
``in_place`` style is that part alone: the source's description with one object's words changed.
``paraphrase(scene, rng, split)`` draws a variant from the ``train`` or ``heldout`` forms of
lexicon.py; the two splits share no template (see ``paraphrase_traced``) and the held-out split
uses only words the train split uses. All text is lower case; ``words`` splits it into tokens.
"""
from __future__ import annotations

import random
import re

from ..errors import UniFusionError
from . import lexicon as lx
from .world import BACKGROUNDS, OBJECT_COLORS, SHAPES, SIZES, Obj, Scene

SPLITS = ("train", "heldout")
# an edit's VERIFI rewrite: the target's description (by cell), the same with the objects in the source's
# order ("in_place"), or the source's description first and then that ("source_first")
EDIT_REWRITES = ("target", "in_place", "source_first")
_TOKEN = re.compile(r"[a-z]+|[.,;:]")


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens of ``text``."""
    return _TOKEN.findall(text.lower())


def article(next_word: str) -> str:
    return "an" if next_word[:1] in "aeiou" else "a"


def fix_articles(text: str) -> str:
    """'a' before a vowel becomes 'an' and vice versa ('a' is only ever an article here)."""
    text = re.sub(r"\ba (?=[aeiou])", "an ", text)
    return re.sub(r"\ban (?=[^aeiou])", "a ", text)


# -- canonical ----------------------------------------------------------------------------------------

def object_canonical(o: Obj) -> str:
    return f"a {o.size} {o.color} {o.shape} in the {lx.CELL_NAMES[o.cell]}"


def join_list(items: list[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe(scene: Scene) -> str:
    """The canonical description of ``scene`` (deterministic): its objects by cell."""
    return describe_in_order(scene, scene.objects)


def describe_in_order(scene: Scene, objects) -> str:
    """The canonical phrasing of ``scene`` with its objects listed in the order given (e.g. a request's
    own order; ``describe`` lists them by cell)."""
    if not scene.objects:
        return f"an empty {scene.background} background"
    return f"{join_list([object_canonical(o) for o in objects])} on {article(scene.background)} {scene.background} background"


def in_place(source: Scene, target: Scene) -> list:
    """The target's objects in the order of the source's description: each kept object where it was,
    a changed one (recoloured, moved, ...) in the place of the one it replaces, an added one last and a
    removed one left out. So the target's text is the source's with one object's words changed."""
    new = [o for o in target.objects if o not in source.objects]
    swap = len(target.objects) == len(source.objects)  # a change in place, not an addition or removal
    order = []
    for o in source.objects:
        if o in target.objects:
            order.append(o)
        elif swap and new:
            order.append(new.pop(0))
    return order + new


def edit_rewrite(source: Scene, target: Scene, style: str = "target") -> str:
    """An edit's VERIFI rewrite: ``style`` "target" is the target's description (objects by cell, so a
    move or an addition reorders them); "in_place" is the target's with its objects in the source's
    order (``in_place``), the source's text with one object's words changed; "source_first" states the
    source's description first and then, after ``lexicon.EDIT_MARK``, the in-place target, so the VLM
    edits a text it has just read off the image instead of editing the image in one go."""
    if style not in EDIT_REWRITES:
        raise UniFusionError(f"edit rewrite style should be one of {EDIT_REWRITES}, found {style!r}.")
    if style == "target":
        return describe(target)
    kept_order = describe_in_order(target, in_place(source, target))
    return kept_order if style == "in_place" else f"{describe(source)}. {lx.EDIT_MARK} {kept_order}"


def _alt(names) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


_OBJ_RE = re.compile(rf"an? ({_alt(SIZES)}) ({_alt(OBJECT_COLORS)}) ({_alt(SHAPES)}) in the ({_alt(lx.CELL_NAMES)})")
_SCENE_RE = re.compile(rf"(.+) on an? ({_alt(BACKGROUNDS)}) background")
_MARK_RE = re.compile(r"\s*".join(re.escape(w) for w in words(lx.EDIT_MARK)))  # decoded: "edited :"
_EMPTY_RE = re.compile(rf"an empty ({_alt(BACKGROUNDS)}) background")


def source_part(text: str) -> Scene | None:
    """Of a ``source_first`` edit rewrite, the scene its text before the mark states (the source as
    the VLM read it); None when ``text`` has no mark or that part is not a description."""
    parts = _MARK_RE.split(" ".join(text.lower().split()))
    return parse_description(parts[0]) if len(parts) > 1 else None


def parse_description(text: str) -> Scene | None:
    """The scene a canonical description states, or None when ``text`` is not one; of a
    ``source_first`` edit rewrite, the scene after the mark (the edited image; a word-level
    tokenizer decodes the mark as "edited :")."""
    text = " ".join(text.lower().split())
    text = _MARK_RE.split(text)[-1].rstrip(".").strip()
    empty = _EMPTY_RE.fullmatch(text)
    if empty:
        return Scene(empty.group(1), ())
    m = _SCENE_RE.fullmatch(text)
    if not m:
        return None
    objs = []
    for part in re.split(r", and |, | and ", m.group(1)):
        om = _OBJ_RE.fullmatch(part)
        if not om:
            return None
        cell = lx.CELL_NAMES.index(om.group(4))
        objs.append(Obj(om.group(3), om.group(2), om.group(1), cell // 3, cell % 3))
    try:
        return Scene(m.group(2), tuple(objs))
    except UniFusionError:
        return None


# -- paraphrases --------------------------------------------------------------------------------------

def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UniFusionError(f"paraphrase split must be one of {SPLITS}, found {split!r}.")


def color_fields(color: str, rng: random.Random) -> dict[str, str]:
    thing, noun = lx.COLOR_THINGS[color]
    return {"color": rng.choice(lx.COLOR_WORDS[color]), "thing": thing, "noun": noun,
            "cn": rng.choice(lx.COLOUR_NOUN)}


def position_phrase(cell: int, rng: random.Random, split: str = "train") -> str:
    """A phrase placing something in ``cell`` ("in the upper left corner"); held-out forms are new."""
    return rng.choice(lx.POSITIONS[split][cell])


def position_np(cell: int, rng: random.Random) -> str:
    """A noun phrase naming ``cell`` ("upper left corner") for 'move to the ...' instructions (the
    two-part train phrases such as "in the middle at the top" do not read as a noun phrase)."""
    return rng.choice([p[len("in the "):] for p in lx.POSITIONS["train"][cell]
                       if p.startswith("in the ") and " at the " not in p and " on the " not in p])


def _pick(table: dict[str, dict[str, str]], split: str, rng: random.Random, trace: list[str]) -> str:
    forms = table[split] or table["train"]
    name = rng.choice(sorted(forms))
    trace.append(name)
    return forms[name]


def object_phrase(o: Obj, rng: random.Random, split: str = "train", trace: list[str] | None = None) -> str:
    """A paraphrase of one object with its position."""
    trace = [] if trace is None else trace
    held = split == "heldout"  # held-out paraphrases mix held-out and train object / position forms
    template = _pick(lx.OBJECT_TEMPLATES, "heldout" if held and rng.random() < 0.5 else "train", rng, trace)
    pos = position_phrase(o.cell, rng, "heldout" if held and rng.random() < 0.5 else "train")
    size = rng.choice(lx.SIZE_WORDS[o.size])
    fields = dict(color_fields(o.color, rng), size=size, shape=rng.choice(lx.SHAPE_WORDS[o.shape]), pos=pos)
    return fix_articles(template.format(art="a", **fields))


def _background(scene: Scene, rng: random.Random, split: str, trace: list[str]) -> dict[str, str]:
    fields = color_fields(scene.background, rng)
    np_ = fix_articles(_pick(lx.BACKGROUND_NP, split, rng, trace).format(art="a", **fields))
    adj = _pick(lx.BACKGROUND_ADJ, split, rng, trace).format(**fields)
    return {"bgnp": np_, "bgadj": adj}


def _relation(a: Obj, b: Obj) -> str:
    """Where ``b`` is relative to ``a``: 'above and to the left of', 'below', ... (vertical first)."""
    rels = (["above"] if b.row < a.row else ["below"] if b.row > a.row else [])
    rels += (["left of"] if b.col < a.col else ["right of"] if b.col > a.col else [])
    return " and ".join(lx.RELATION_WORDS[r] for r in rels)


def _relational(name: str, objs: list[Obj], phrases: list[str], bg: dict, rng: random.Random) -> str:
    anchor = rng.choice(lx.SHAPE_WORDS[objs[0].shape])
    if name == "rel_after":
        head, each = lx.RELATION_FRAMES[name]
        parts = [head.format(first=phrases[0], **bg)]
        parts += [each.format(obj=p, rel=_relation(objs[0], o), anchor=anchor) for o, p in zip(objs[1:], phrases[1:])]
        return " ".join(parts)
    if name == "rel_with":
        head, each, tail = lx.RELATION_FRAMES[name]
        rest = [each.format(obj=p, rel=_relation(objs[0], o)) for o, p in zip(objs[1:], phrases[1:])]
        return f"{head.format(first=phrases[0])} {join_list(rest)}{tail.format(**bg)}"
    head, each, tail = lx.RELATION_FRAMES[name]
    parts = [head.format(obj=phrases[1], rel=_relation(objs[0], objs[1]), first=phrases[0])]
    parts += [each.format(obj=p) for p in phrases[2:]]
    return " ".join(parts + [tail.format(**bg)])


def paraphrase_ordered(scene: Scene, rng: random.Random, split: str = "train"
                       ) -> tuple[str, tuple[str, ...], tuple[Obj, ...]]:
    """(paraphrase, names of the scene/object/background templates used, the objects in the order the
    paraphrase mentions them): see ``paraphrase``."""
    _check_split(split)
    if not scene.objects:
        return describe(scene), ("canonical",), ()
    trace: list[str] = []
    frames = {k: v for k, v in lx.SCENE_TEMPLATES[split].items() if not k.startswith("rel_") or len(scene.objects) > 1}
    name = rng.choice(sorted(frames))
    trace.append(name)
    objs = list(scene.objects)
    rng.shuffle(objs)
    phrases = [object_phrase(o, rng, split, trace) for o in objs]
    bg = _background(scene, rng, split, trace)
    if name.startswith("rel_"):
        head = lx.RELATION_FRAMES[name][0]  # frames whose head names {obj} before {first} mention the 2nd first
        second_first = "{obj}" in head and head.index("{obj}") < head.index("{first}")
        order = [objs[1], objs[0], *objs[2:]] if second_first else objs
        return _relational(name, objs, phrases, bg, rng), tuple(trace), tuple(order)
    return frames[name].format(objs=join_list(phrases), **bg), tuple(trace), tuple(objs)


def paraphrase_traced(scene: Scene, rng: random.Random, split: str = "train") -> tuple[str, tuple[str, ...]]:
    """(paraphrase, names of the scene/object/background templates used): see ``paraphrase``."""
    return paraphrase_ordered(scene, rng, split)[:2]


def paraphrase(scene: Scene, rng: random.Random, split: str = "train") -> str:
    """A seeded paraphrase of ``scene``: synonyms, indirect colours ("the colour of the sky"), word
    order, relational phrasing. ``heldout`` always uses a held-out scene frame (plus some held-out
    object, position and background forms) and never appears in training data."""
    return paraphrase_traced(scene, rng, split)[0]


def template_names(split: str) -> set[str]:
    """Names of every scene/object/background template of ``split`` (for split-disjointness checks)."""
    _check_split(split)
    names = set(lx.SCENE_TEMPLATES[split]) | set(lx.OBJECT_TEMPLATES[split])
    return names | set(lx.BACKGROUND_NP[split]) | set(lx.BACKGROUND_ADJ[split])


# -- instructions -------------------------------------------------------------------------------------

EDIT_KINDS = tuple(lx.EDIT_TEMPLATES)
COMPOSE_KINDS = tuple(lx.COMPOSE_TEMPLATES)


def refer(o: Obj, scene: Scene, rng: random.Random) -> str:
    """The shortest unique description of ``o`` in ``scene``: 'red circle', 'small red circle' or
    'red circle in the top left' (synonyms drawn from ``rng``)."""
    others = [x for x in scene.objects if x != o]
    name = f"{rng.choice(lx.COLOR_WORDS[o.color])} {rng.choice(lx.SHAPE_WORDS[o.shape])}"
    if not any((x.color, x.shape) == (o.color, o.shape) for x in others):
        return name
    if not any((x.color, x.shape, x.size) == (o.color, o.shape, o.size) for x in others):
        return f"{rng.choice(lx.SIZE_WORDS[o.size])} {name}"
    return f"{name} {position_phrase(o.cell, rng)}"


def edit_instruction(kind: str, source: Scene, rng: random.Random, split: str = "train", *,
                     obj: Obj | None = None, new: Obj | None = None, background: str | None = None) -> str:
    """An instruction for one edit of ``source``: ``obj`` is the edited object as it was (None for
    add / background), ``new`` as it becomes (None for remove), ``background`` the new background."""
    _check_split(split)
    if kind not in lx.EDIT_TEMPLATES:
        raise UniFusionError(f"edit kind must be one of {EDIT_KINDS}, found {kind!r}.")
    template = rng.choice(lx.EDIT_TEMPLATES[kind][split])
    fields = {"ref": refer(obj, source, rng) if obj is not None else ""}
    if kind == "background":
        fields.update(color_fields(background, rng), bg=rng.choice(lx.COLOR_WORDS[background]))
    elif kind == "add":
        fields["obj"] = object_phrase(new, rng, split)
    elif new is not None:
        fields.update(color_fields(new.color, rng), np=position_np(new.cell, rng),
                      cmp=rng.choice(lx.COMPARATIVES[new.size]), size=rng.choice(lx.SIZE_WORDS[new.size]),
                      shape=rng.choice(lx.SHAPE_WORDS[new.shape]))
    fields.setdefault("cn", rng.choice(lx.COLOUR_NOUN))
    return fix_articles(template.format(art="a", **fields))


def compose_instruction(kind: str, rng: random.Random) -> str:
    """An instruction for a two-reference composition (evaluation only)."""
    if kind not in lx.COMPOSE_TEMPLATES:
        raise UniFusionError(f"composition kind must be one of {COMPOSE_KINDS}, found {kind!r}.")
    return rng.choice(lx.COMPOSE_TEMPLATES[kind]).format(cn=rng.choice(lx.COLOUR_NOUN))


# -- vocabulary ---------------------------------------------------------------------------------------

def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # keys are template names or canonical names (also in the values)
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def vocabulary() -> list[str]:
    """Every token the language can emit (descriptions, paraphrases, instructions), sorted."""
    tables = [getattr(lx, n) for n in dir(lx) if n.isupper()] + [SHAPES, SIZES, tuple(OBJECT_COLORS),
                                                                   tuple(BACKGROUNDS)]
    tokens = set()
    for s in _strings(tables):
        tokens.update(words(re.sub(r"\{\w+\}", " ", s)))
    return sorted(tokens)
