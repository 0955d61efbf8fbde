"""The shapes world: seeded scenes, their language, tasks and a model-free evaluator (toy demo + tests).

    python -m unifusion_core.toy write DIR --t2i 2000 --edit 2000 --recon 60 --compose 200
    python -m unifusion_core.toy check DIR          # evaluator on the written targets
    python -m unifusion_core.toy show --seed 3      # a scene, its description and paraphrases

Modules: world (Scene, render), lexicon (word tables), language (describe, parse_description,
paraphrase, instructions, vocabulary), tasks (examples, write_dataset), evaluator (read_scene, score).
"""
from .evaluator import EditScore, Score, evaluate_image, read_scene, score, score_edit
from .language import (COMPOSE_KINDS, EDIT_KINDS, SPLITS, compose_instruction, describe, edit_instruction,
                       paraphrase, paraphrase_traced, parse_description, vocabulary, words)
from .tasks import apply_edit, compose_example, edit_example, recon_example, t2i_example, write_dataset
from .world import (BACKGROUNDS, OBJECT_COLORS, SHAPES, SIZES, Obj, Scene, random_scene, relations, render)

__all__ = ["BACKGROUNDS", "COMPOSE_KINDS", "EDIT_KINDS", "OBJECT_COLORS", "SHAPES", "SIZES", "SPLITS",
           "EditScore", "Obj", "Scene", "Score", "apply_edit", "compose_example", "compose_instruction",
           "describe", "edit_example", "edit_instruction", "evaluate_image", "paraphrase", "paraphrase_traced",
           "parse_description", "random_scene", "read_scene", "recon_example", "relations", "render", "score",
           "score_edit", "t2i_example", "vocabulary", "words", "write_dataset"]
