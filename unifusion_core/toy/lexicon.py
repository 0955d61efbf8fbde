"""Word tables and templates of the shapes-world language (data only; language.py uses them).

Every table is split into ``train`` forms and ``heldout`` forms. Held-out forms are new sentence
frames and new combinations of words that the training forms already use (e.g. "sky coloured" from
"the colour of the sky" and "coloured red"; "at the top on the left" from "at the top" and "on the
left"), so a model trained on the train split has seen every word and is tested on the structure.
Placeholders: {objs} objects joined with "," / "and"; {bgnp} background noun phrase; {bgadj}
background colour phrase; {ref} referring expression; {color}/{shape}/{size} words; {np} position
noun phrase; {obj} object phrase with position; {cmp} comparative; {bg} background colour word.
"""
from __future__ import annotations

CELL_NAMES = ("top left", "top center", "top right", "middle left", "center", "middle right",
              "bottom left", "bottom center", "bottom right")

SHAPE_WORDS = {"circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle",),
               "cross": ("cross", "plus sign")}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
COMPARATIVES = {"small": ("smaller",), "large": ("bigger", "larger")}
COLOR_WORDS = {"red": ("red",), "green": ("green",), "blue": ("blue",), "yellow": ("yellow",),
               "purple": ("purple", "violet"), "orange": ("orange",), "grey": ("grey", "gray"),
               "white": ("white",), "black": ("black",), "beige": ("beige",)}
# indirect references: (noun phrase after "the colour of", bare noun for "<noun> coloured")
COLOR_THINGS = {"red": ("a tomato", "tomato"), "green": ("grass", "grass"), "blue": ("the sky", "sky"),
                "yellow": ("a lemon", "lemon"), "purple": ("a plum", "plum"), "orange": ("a pumpkin", "pumpkin"),
                "grey": ("ash", "ash"), "white": ("snow", "snow"), "black": ("coal", "coal"),
                "beige": ("sand", "sand")}
COLOUR_NOUN = ("colour", "color")

_ROW_SYN = {"top": ("top", "upper"), "middle": ("middle",), "bottom": ("bottom", "lower")}
_EDGE = {"top center": "at the top", "bottom center": "at the bottom", "middle left": "on the left",
         "middle right": "on the right"}


def _position_phrases() -> dict[str, dict[int, tuple[str, ...]]]:
    """Per cell, its ``train`` and ``heldout`` position phrases. The train split also names cells by
    two parts in either order ("on the left at the top", "in the middle on the left"), so the held-out
    orders and pairings ("at the top on the left", "on the left in the middle") stay unseen while
    their parts are not."""
    train: dict[int, tuple[str, ...]] = {}
    heldout: dict[int, tuple[str, ...]] = {}
    for cell, name in enumerate(CELL_NAMES):
        if name == "center":
            train[cell] = ("in the center", "in the middle", "in the centre", "in the center of the image")
            heldout[cell] = ("in the middle of the image",)
        elif name in _EDGE:
            row, col = name.split()
            alt = f"in the {_ROW_SYN[row][-1]} middle" if row != "middle" else f"in the center {col}"
            train[cell] = (f"in the {name}", alt, _EDGE[name], f"in the middle {_EDGE[name]}")
            other = "at the top" if row == "top" else "at the bottom" if row == "bottom" else f"on the {col}"
            heldout[cell] = (f"{other} in the middle",)
        else:
            row, col = name.split()
            train[cell] = (*(f"in the {r} {col}{corner}" for r in _ROW_SYN[row] for corner in ("", " corner")),
                           f"at the {row} {col}", f"on the {col} at the {row}")
            heldout[cell] = (f"at the {row} on the {col}",)
    return {"train": train, "heldout": heldout}


POSITIONS = _position_phrases()

# object phrases: {art} article, {size} {color} {shape} words, {thing} "the colour of" phrase,
# {noun} bare colour noun, {pos} position phrase, {cn} colour noun
OBJECT_TEMPLATES = {
    "train": {"o_adj": "{art} {size} {color} {shape} {pos}",
              "o_thing": "{art} {size} {shape} the {cn} of {thing} {pos}",
              "o_coloured": "{art} {size} {shape} coloured {color} {pos}",
              "o_posfirst": "{pos}, {art} {size} {color} {shape}",
              "o_color_coloured": "{art} {size} {color} coloured {shape} {pos}",
              "o_in_thing": "{art} {size} {shape} in the {cn} of {thing} {pos}",
              "o_that_is": "{art} {size} {shape} that is {color} {pos}"},
    "heldout": {"o_noun_coloured": "{art} {size} {noun} coloured {shape} {pos}",
                "o_in_color": "{art} {size} {shape} in {color} {pos}"},
}
BACKGROUND_NP = {
    "train": {"b_adj": "{art} {color} background", "b_thing": "a background the {cn} of {thing}",
              "b_coloured": "{art} {color} coloured background"},
    "heldout": {"b_noun_coloured": "{art} {noun} coloured background"},
}
BACKGROUND_ADJ = {"train": {"ba_adj": "{color}", "ba_thing": "the {cn} of {thing}"}, "heldout": {}}
# scene frames; "rel_*" frames are built in language.py from RELATION_FRAMES
SCENE_TEMPLATES = {
    "train": {"s_on": "{objs} on {bgnp}", "s_with": "{bgnp} with {objs}",
              "s_image": "an image of {objs} on {bgnp}",
              "s_there": "there is {objs}. the background is {bgadj}.",
              "s_bg_then": "the background is {bgadj}. there is {objs}.",
              "s_there_and": "there is {objs} and the background is {bgadj}",
              "s_on_first": "on {bgnp}, {objs}", "s_there_on": "there is {objs} on {bgnp}",
              "rel_after": None, "rel_with": None, "rel_is": None, "rel_and": None},
    "heldout": {"s_bg_first": "the background is {bgadj} and there is {objs}",
                "s_on_there": "on {bgnp} there is {objs}", "rel_before": None},
}
RELATION_FRAMES = {
    "rel_after": ("{first} on {bgnp}.", "{obj} is {rel} the {anchor}."),
    "rel_with": ("{first}, with", "{obj} {rel} it", ", on {bgnp}"),
    "rel_before": ("{obj}, {rel} {first},", "and {obj},", "on {bgnp}"),
    # stage 10: train frames where a relation word is followed by a whole object phrase ("rel_is") and
    # a second "it" frame; the held-out rel_before wording (", to the left of ...") stays unseen
    "rel_is": ("there is {obj} {rel} {first}.", "there is {obj}.", "the background is {bgadj}."),
    "rel_and": ("{first}, and {obj} {rel} it,", "with {obj},", "on {bgnp}"),
}
RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}

EDIT_TEMPLATES = {
    "recolor": {"train": ("make the {ref} {color}", "change the {cn} of the {ref} to {color}",
                          "paint the {ref} {color}", "make the {ref} the {cn} of {thing}",
                          "change the {ref} to {color}", "turn the {ref} {color}",
                          "change the {cn} of the {ref} into {color}"),
                "heldout": ("{cn} the {ref} {color}", "make the {cn} of the {ref} {color}")},
    "move": {"train": ("move the {ref} to the {np}", "put the {ref} in the {np}", "move the {ref} into the {np}",
                       "take the {ref} to the {np}"),
             "heldout": ("put the {ref} at the {np}",)},
    "resize": {"train": ("make the {ref} {cmp}", "turn the {ref} into {art} {size} {shape}",
                         "change the {ref} into {art} {size} one", "replace the {ref} with {art} {size} one",
                         "turn the {ref} {size}"),
               "heldout": ("make the {ref} {size}",)},
    "add": {"train": ("add {obj}", "put {obj}", "add {obj} to it", "put {obj} in the image",
                      "add {obj} in the image"),
            "heldout": ("add {obj} to the image",)},
    "remove": {"train": ("remove the {ref}", "delete the {ref}", "take away the {ref}", "put the {ref} away",
                         "remove the {ref} from the image", "delete the {ref} from it",
                         "take the {ref} from the image"),
               "heldout": ("take the {ref} away",)},
    "reshape": {"train": ("turn the {ref} into {art} {shape}", "change the {ref} into {art} {shape}",
                          "replace the {ref} with {art} {color} {shape}", "make the {ref} {art} {shape}",
                          "change the {ref} to {art} {shape}"),
                "heldout": ("make the {ref} into {art} {shape}",)},
    "background": {"train": ("make the background {bg}", "change the background to {bg}",
                             "change the background {cn} to {bg}", "paint the background the {cn} of {thing}",
                             "turn the background {bg}", "change the background of the image to {bg}"),
                   "heldout": ("paint the background {bg}",)},
}
# two-reference compositions: evaluation only, never in a training manifest
COMPOSE_TEMPLATES = {
    "objects_on_background": ("put the objects from the first image on the background of the second image",
                              "the objects of the first image on the background of the second image"),
    "combine": ("combine the objects of both images on the background of the first image",
                "put the objects of the second image into the first image"),
    "recolor_like": ("make the object in the first image the {cn} of the object in the second image",),
}
RECON_TEMPLATES = ("reconstruct this image.",)
# an edit rewrite in the "source_first" style: the source's description, this mark, the target's
EDIT_MARK = "edited:"
EXTRA_WORDS = ("a", "an", "and", "on", "in", "the", "background", "empty", "of", "to", "it", "is")
