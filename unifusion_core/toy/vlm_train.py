"""Train the toy VLM (``toy_vlm.py``) from scratch on the shapes world, and measure it.

Tasks, drawn on the fly from a seeded world (no files), each one conversation in Gemma3's chat
template with the VERIFI system prompt of its task; the loss is on the assistant answer (and the
end-of-turn token that stops it) only:

- caption:  one image + "describe the image." (system "edit")         -> describe(scene)
- t2i:      a train-split paraphrase or the canonical text (system "t2i") -> describe(scene)
- edit:     the source image + a train-split edit instruction (system "edit") -> describe(target)
- pick:     two images + "describe the first/second image." (system "multi_ref") -> that image
- compose:  two images + a composition instruction (system "multi_ref") -> describe(target); the
            VLM learns multi-image instructions as real VLMs do, the DiT never sees two references

Conversations are built by ``VLMEncoder.prepare`` (the same rendering and token roles as VERIFI
decoding), so training and inference see the same tokens. Legend: B batch, T tokens, V vocab.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import UniFusionError
from ..train.precision import choose_precision
from ..verifi import system_prompt
from ..vlm.encoder import VLMEncoder
from ..vlm.features import Role
from ..vlm.prompts import Prompt
from .language import EDIT_KINDS, EDIT_REWRITES, describe, parse_description
from .tasks import compose_example, edit_example, t2i_example
from .toy_vlm import ToyVLMConfig, build_model, build_tokenizer, save_folder
from .world import Scene, random_scene, render

log = logging.getLogger(__name__)

TASKS = ("caption", "t2i", "edit", "pick", "compose")
CAPTION_INSTRUCTIONS = ("describe the image.", "describe this image.")
PICK_INSTRUCTIONS = ("describe the first image.", "describe the second image.")


@dataclass(frozen=True)
class VLMTrainConfig:
    """Trainer settings (dumped to ``out/train_config.json``)."""

    out: str = "unifusion_core/toy/models/unifusion-toy-vlm"
    minutes: float = 30.0
    preset: str = "toy"
    batch_size: int = 32
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mix: tuple = (0.32, 0.27, 0.27, 0.04, 0.10)  # caption, t2i, edit, pick, compose
    canonical_share: float = 0.2
    precision: str = "auto"  # "auto": bf16 autocast only where the probe finds it faster (train/precision.py)
    seed: int = 0
    log_every: int = 20
    save_minutes: float = 5.0
    max_steps: int = 0  # 0: until ``minutes`` run out
    threads: int = 1  # the 2 cores are shared: OpenMP spin-waits collapse when oversubscribed
    init_from: str = ""  # a toy VLM folder to continue from (its steps and minutes add up)
    augment: float = 0.0  # share of T2I / edit requests perturbed by ``augment`` (train phrasing only)
    rewrite_order: str = "canonical"  # T2I rewrites list the objects "canonical"ly (by cell) or in the "request"'s order
    edit_rewrite: str = "target"  # edit rewrites: language.EDIT_REWRITES (target by cell, in_place, source_first)
    edit_kinds: tuple = ()  # edit kind weights in EDIT_KINDS order; (): every kind equally often
    device: str = "cpu"  # "cpu" | "cuda" | "auto" (CUDA when present)
    workers: int = 0  # processes drawing batches (a GPU outruns one CPU core's batches); 0: in the loop


# --------------------------------------------------------------------------------------------------
# examples
# --------------------------------------------------------------------------------------------------

FUNCTION_WORDS = frozenset({"a", "an", "the", "is", "there"})


def augment(text: str, rng: random.Random) -> str:
    """A perturbed training request with the same meaning: each function word dropped with
    probability 0.3, every other word kept in its place. Only ever applied to train-split phrasing;
    no reordering (a reordered train frame could come close to a held-out one, see lexicon.py)."""
    kept = [w for w in text.split() if w not in FUNCTION_WORDS or rng.random() >= 0.3]
    return " ".join(kept) or text


def make_prompt(task: str, rng: random.Random, split: str = "train", augment_share: float = 0.0,
                rewrite_order: str = "canonical", edit_rewrite: str = "target",
                edit_kinds: tuple = ()) -> tuple[Prompt, Scene]:
    """One example of ``task``: the prompt with its answer in ``generated``, and the target scene.
    ``rewrite_order`` "request": a T2I rewrite lists the objects in the order the request names them
    (canonical phrasing each), so rewriting needs no reordering. ``edit_rewrite``: "in_place" keeps
    the source's object order, "source_first" describes the source image first
    (``language.edit_rewrite``). ``edit_kinds``: weights of the edit kinds (``EDIT_KINDS`` order), ()
    for a uniform draw."""
    if task == "caption":
        scene = random_scene(rng)
        return Prompt(rng.choice(CAPTION_INSTRUCTIONS), system_prompt("edit"), [render(scene)],
                      generated=describe(scene)), scene
    if task == "t2i":
        ex = t2i_example(rng, split, canonical_share=0.2 if split == "train" else 0.0, rewrite_order=rewrite_order)
        return Prompt(_maybe_augment(ex["prompts"][0], rng, split, augment_share), system_prompt("t2i"),
                      generated=ex["rewrite"]), Scene.from_json(ex["target"])
    if task == "edit":
        kind = rng.choices(EDIT_KINDS, weights=edit_kinds)[0] if edit_kinds else None
        ex = edit_example(rng, kind=kind, split=split, edit_rewrite=edit_rewrite)
        source = Scene.from_json(ex["refs"][0])
        return Prompt(_maybe_augment(ex["prompts"][0], rng, split, augment_share), system_prompt("edit"), [render(source)],
                      generated=ex["rewrite"]), Scene.from_json(ex["target"])
    if task == "pick":
        scenes = [random_scene(rng), random_scene(rng)]
        which = rng.randrange(2)
        return Prompt(PICK_INSTRUCTIONS[which], system_prompt("multi_ref"),
                      [render(s) for s in scenes], generated=describe(scenes[which])), scenes[which]
    if task == "compose":
        ex = compose_example(rng)
        return Prompt(ex["prompts"][0], system_prompt("multi_ref"), [render(Scene.from_json(r)) for r in ex["refs"]],
                      generated=ex["rewrite"]), Scene.from_json(ex["target"])
    raise ValueError(f"task should be one of {TASKS}, found {task!r}.")


def _maybe_augment(text: str, rng: random.Random, split: str, share: float) -> str:
    return augment(text, rng) if split == "train" and share > 0 and rng.random() < share else text


def encode_example(encoder: VLMEncoder, prompt: Prompt) -> dict:
    """Input tensors of one answered prompt and its labels: the answer ids and the stop token."""
    inputs, roles = encoder.build_inputs(prompt)  # (1, T) each, roles (T,)
    answer = (roles == int(Role.GENERATED)).nonzero()[:, 0]
    labels = torch.full_like(inputs["input_ids"][0], -100)  # (T,)
    keep = torch.cat([answer, answer[-1:] + 1])  # + the end-of-turn token after the answer
    labels[keep] = inputs["input_ids"][0, keep]
    return {**inputs, "labels": labels[None]}


def collate(examples: list[dict], pad_id: int) -> dict:
    """Right-pad a list of ``encode_example`` outputs into one batch (B, T)."""
    # a few fixed lengths: oneDNN builds its bf16 kernels per shape, ~1 s for each new one
    T = -(-max(e["input_ids"].shape[1] for e in examples) // 32) * 32
    fills = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "labels": -100}
    batch = {k: torch.full((len(examples), T), v, dtype=torch.long) for k, v in fills.items()}
    for b, e in enumerate(examples):
        n = e["input_ids"].shape[1]
        for k in fills:
            batch[k][b, :n] = e[k][0]
    pixels = [e["pixel_values"] for e in examples if "pixel_values" in e]
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)  # (images, 3, H, W), in token order
    return batch


def sample_batch(encoder: VLMEncoder, rng: random.Random, cfg: VLMTrainConfig) -> dict:
    tasks = rng.choices(TASKS, weights=cfg.mix, k=cfg.batch_size)
    examples = [encode_example(encoder, make_prompt(t, rng, augment_share=cfg.augment, rewrite_order=cfg.rewrite_order,
                                                        edit_rewrite=cfg.edit_rewrite, edit_kinds=cfg.edit_kinds)[0])
                for t in tasks]
    return collate(examples, encoder.tokenizer.pad_token_id)


# --------------------------------------------------------------------------------------------------
# objective and loop
# --------------------------------------------------------------------------------------------------

def answer_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy on the labelled (answer) tokens -> (loss, share of labelled
    tokens predicted exactly)."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()  # (B, T-1, V)
    target = labels[:, 1:]  # (B, T-1)
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100)
    mask = target != -100
    correct = (logits.argmax(-1) == target)[mask].float().mean()
    return loss, correct


def _lr(cfg: VLMTrainConfig, step: int, progress: float) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cos = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


def train(cfg: VLMTrainConfig) -> Path:
    """Train a toy VLM from scratch for ``cfg.minutes`` (or ``cfg.max_steps``); save to ``cfg.out``."""
    torch.set_num_threads(cfg.threads)
    out, vcfg = Path(cfg.out), ToyVLMConfig.preset(cfg.preset)
    out.mkdir(parents=True, exist_ok=True)
    record = asdict(cfg)
    if cfg.init_from and (Path(cfg.init_from) / "train_config.json").is_file():  # the earlier stages
        record["continues"] = json.loads((Path(cfg.init_from) / "train_config.json").read_text())
    (out / "train_config.json").write_text(json.dumps(record, indent=2))
    tokenizer, before = build_tokenizer(), {"trained_steps": 0, "trained_minutes": 0.0}
    if cfg.init_from:
        model, before, vcfg = _warm_start(Path(cfg.init_from), tokenizer)
    else:
        model = build_model(vcfg, tokenizer, cfg.seed)
    model.train()
    model.set_attn_implementation("eager")  # CPU SDPA's backward is ~3x slower at T ~ 170
    handler = _history(out, cfg)
    try:
        return _loop(cfg, out, model, tokenizer, vcfg, before)
    finally:
        log.removeHandler(handler)
        handler.close()


def _history(out: Path, cfg: VLMTrainConfig) -> logging.Handler:
    """``out/train.log``: the earlier stages' log (from ``init_from``) under a header for this stage,
    then this run's log lines as they come."""
    earlier = Path(cfg.init_from) / "train.log" if cfg.init_from else None
    text = earlier.read_text().rstrip("\n") + "\n" if earlier and earlier.is_file() else ""
    n = sum(ln.startswith("# stage ") for ln in text.splitlines()) + 1
    how = f"--init-from stage {n - 1}" if cfg.init_from else "from scratch"
    (out / "train.log").write_text(text + f"# stage {n} ({how}; {cfg.minutes:g} min, batch {cfg.batch_size}, "
                                          f"lr {cfg.lr:g}, seed {cfg.seed}, augment {cfg.augment:g})\n")
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    return handler


class _Batches(torch.utils.data.IterableDataset):
    """Endless ``sample_batch`` batches; with several loader workers each draws from its own seed."""

    def __init__(self, encoder: VLMEncoder, cfg: VLMTrainConfig):
        self.encoder, self.cfg = encoder, cfg

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = random.Random(self.cfg.seed if info is None else f"{self.cfg.seed}/{info.id}")
        while True:
            yield sample_batch(self.encoder, rng, self.cfg)


def _device(cfg: VLMTrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _loop(cfg: VLMTrainConfig, out: Path, model, tokenizer, vcfg, before: dict) -> Path:
    save_folder(out, model, tokenizer, vcfg)  # writes the processor files the encoder needs
    encoder = _encoder(out, model, tokenizer)
    device = _device(cfg)
    batches = iter(torch.utils.data.DataLoader(_Batches(encoder, cfg), batch_size=None, num_workers=cfg.workers,
                                               prefetch_factor=4 if cfg.workers else None))
    model.to(device)  # after the workers started: they only tokenize and render
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            betas=(0.9, 0.98))
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and choose_precision(device.type) == "bf16")
    log.info("precision: %s", "bf16 autocast" if bf16 else "fp32")
    start, last_save, step = time.time(), time.time(), 0
    acc_loss, acc_tok, n = torch.zeros((), device=device), torch.zeros((), device=device), 0
    while True:
        progress = (time.time() - start) / (cfg.minutes * 60)
        if (cfg.max_steps and step >= cfg.max_steps) or (not cfg.max_steps and progress >= 1):
            break
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step, step / cfg.max_steps if cfg.max_steps else progress)
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, tok = answer_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step, n = step + 1, n + 1
        acc_loss, acc_tok = acc_loss + loss.detach(), acc_tok + tok.detach()
        if step % cfg.log_every == 0:
            log.info("step %d  %.1f min  loss %.4f  token acc %.4f  grad %.3f  lr %.2e", step,
                     (time.time() - start) / 60, acc_loss.item() / n, acc_tok.item() / n, grad.item(),
                     opt.param_groups[0]["lr"])
            acc_loss, acc_tok, n = torch.zeros((), device=device), torch.zeros((), device=device), 0
        if time.time() - last_save > cfg.save_minutes * 60:
            _save(out, model, tokenizer, vcfg, step, start, before)
            last_save = time.time()
    _save(out, model, tokenizer, vcfg, step, start, before)
    model.cpu()
    return out


def _warm_start(folder: Path, tokenizer):
    """The model of a trained toy VLM folder (fp32, trainable), its training stats and sizes."""
    import transformers

    from .toy_vlm import read_toy_json

    meta = read_toy_json(folder)
    _check_same_vocabulary(folder, tokenizer)
    model = transformers.Gemma3ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    stats = {k: meta.get(k, 0) for k in ("trained_steps", "trained_minutes")}
    return model.requires_grad_(True), stats, ToyVLMConfig(**meta["config"])


def _check_same_vocabulary(folder: Path, tokenizer) -> None:
    """A warm start keeps the embedding rows, so the toy language must still have the word ids the
    folder's model was trained with (a new word in lexicon.py shifts every id after it)."""
    saved, now = _saved_vocabulary(folder), tokenizer.get_vocab()
    if saved != now:
        diff = sorted(t for t in set(now) | set(saved) if now.get(t) != saved.get(t))
        raise UniFusionError(f"--init-from {folder} was trained on a vocabulary of {len(saved)} words and the toy "
                             f"language now has {len(now)} (differing: {', '.join(diff[:8])}); a warm start would "
                             "read the wrong embedding rows. Train from scratch or keep the word list unchanged.")


def _saved_vocabulary(folder: Path) -> dict[str, int]:
    """The word ids of a toy VLM folder's tokenizer.json."""
    return json.loads((Path(folder) / "tokenizer.json").read_text())["model"]["vocab"]


def soup(out, sources) -> Path:
    """Average the weights of toy VLM folders continued from one shared stage (a uniform model soup)
    into a new folder ``out``: the first source's files with the mean weights, a ``train_config.json``
    naming every member and a ``train.log`` holding the first member's history, the other members'
    own stages and one header for the soup. Members must share sizes, vocabulary, every weight name
    and shape, and the edit rewrite style; otherwise one sentence says which differs."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from .toy_vlm import read_toy_json

    out, sources = Path(out), [Path(s) for s in sources]
    if len(sources) < 2:
        raise UniFusionError(f"a soup averages two or more toy VLM folders, got {len(sources)}.")
    if out.exists():
        raise UniFusionError(f"{out} already exists; give the soup a new folder.")
    metas = [read_toy_json(s) for s in sources]  # a toy VLM folder each, or one sentence
    first, styles = sources[0], [trained_edit_rewrite(s) for s in sources]
    vocab = _saved_vocabulary(first)
    sds = [load_file(s / "model.safetensors") for s in sources]
    shapes = {k: v.shape for k, v in sds[0].items()}
    for src, meta, style, sd in zip(sources[1:], metas[1:], styles[1:], sds[1:]):
        if meta["config"] != metas[0]["config"]:
            raise UniFusionError(f"soup members must have the same sizes: {first} has {metas[0]['config']}, "
                                 f"{src} has {meta['config']}.")
        if _saved_vocabulary(src) != vocab:
            raise UniFusionError(f"soup members must share one vocabulary: {src} has other word ids than {first}.")
        if style != styles[0]:
            raise UniFusionError(f"soup members must be trained with one edit rewrite style: {first} has "
                                 f"{styles[0]!r}, {src} has {style!r}.")
        if {k: v.shape for k, v in sd.items()} != shapes:
            raise UniFusionError(f"soup members must have the same weights: {src} has other weight names or "
                                 f"shapes than {first}.")
    with safe_open(first / "model.safetensors", "pt") as f:
        metadata = f.metadata()
    mean = {k: (sum(sd[k].double() for sd in sds) / len(sds)).to(v.dtype) if v.is_floating_point() else v
            for k, v in sds[0].items()}
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(first, tmp)
    save_file(mean, tmp / "model.safetensors", metadata=metadata)
    members = [{"folder": str(s), "trained_steps": m.get("trained_steps", 0),
                "trained_minutes": m.get("trained_minutes", 0.0)} for s, m in zip(sources, metas)]
    (tmp / "toy_vlm.json").write_text(json.dumps({
        "config": metas[0]["config"], "soup_of": members,
        # the longest path of training that led to it; the members' own figures are in soup_of
        "trained_steps": max(m["trained_steps"] for m in members),
        "trained_minutes": max(m["trained_minutes"] for m in members)}, indent=2))
    configs = [json.loads((s / "train_config.json").read_text()) if (s / "train_config.json").is_file() else {}
               for s in sources]
    (tmp / "train_config.json").write_text(json.dumps(
        {"soup_of": configs, "edit_rewrite": styles[0]}, indent=2))
    (tmp / "train.log").write_text(_soup_history(sources))
    tmp.rename(out)
    log.info("wrote %s: the mean of %d toy VLM folders' weights", out, len(sources))
    return out


def _soup_history(sources: list[Path]) -> str:
    """The first member's train.log, then each other member's lines after the part it shares with the
    first (its own stage, its header marked so that it does not count as a stage of the soup), then a
    header for the soup itself."""
    logs = [(s / "train.log").read_text().splitlines() if (s / "train.log").is_file() else [] for s in sources]
    lines = list(logs[0])
    for src, other in zip(sources[1:], logs[1:]):
        shared = len(os.path.commonprefix([logs[0], other]))  # works on lists of lines too
        lines.append(f"# soup member {src}, after the {shared} log lines it shares with {sources[0]}:")
        lines += [ln.replace("# stage ", "# member stage ", 1) if ln.startswith("# stage ") else ln
                  for ln in other[shared:]]
    n = sum(ln.startswith("# stage ") for ln in lines) + 1
    names = ", ".join(str(s) for s in sources)
    return "\n".join(lines + [f"# stage {n} (soup: the mean of the weights of {names})"]) + "\n"


def _encoder(out: Path, model, tokenizer) -> VLMEncoder:
    from .toy_vlm import load_processor

    return VLMEncoder(model, tokenizer, load_processor(out), "gemma3", model.config)


def _save(out: Path, model, tokenizer, vcfg: ToyVLMConfig, step: int, start: float, before: dict) -> None:
    minutes = (time.time() - start) / 60
    save_folder(out, model, tokenizer, vcfg, {"trained_steps": before["trained_steps"] + step,
                                              "trained_minutes": round(before["trained_minutes"] + minutes, 2)})
    log.info("saved %s (step %d, %.1f min this run)", out, step, minutes)


# --------------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------------

def trained_edit_rewrite(folder) -> str:
    """The edit rewrite style a toy VLM folder was trained with (its last stage's train_config.json;
    "target" when it predates the option or was not trained by train-vlm)."""
    path = Path(folder) / "train_config.json"
    style = json.loads(path.read_text()).get("edit_rewrite", "target") if path.is_file() else "target"
    if style not in EDIT_REWRITES:
        raise UniFusionError(f"{path} should name an edit rewrite style of {EDIT_REWRITES}, found {style!r}.")
    return style


def stage_edit_rewrite(flag: str | None, folder) -> str:
    """The edit rewrite style of a stage that continues or trains on the VLM ``folder`` ("" or None: a
    VLM from scratch, "target"): ``flag`` when given (with a warning when the VLM was trained to write
    another style), else the VLM's own, so that a VLM and the DiT trained on it keep one style."""
    trained = trained_edit_rewrite(folder) if folder else "target"
    if flag is None:
        return trained
    if flag != trained:
        log.warning("edit rewrite style %s, but %s was trained to write %s edit rewrites", flag, folder, trained)
    return flag


def evaluate(folder, n: int = 200, seed: int = 12345, tasks=("caption", "t2i", "edit")) -> dict:
    """Greedy ``VLMEncoder.generate`` on ``n`` fresh scenes per task (t2i / edit on the held-out
    paraphrase and instruction split); each answer is parsed and fact-scored against the true
    target scene; "exact" when it parses to exactly that scene. Returns {task: {"fact_accuracy", "exact",
    "parsed"}}."""
    from ..vlm import load_vlm
    from ..vlm.sampling import Sampling
    from .evaluator import score
    from .quality import judge_text

    encoder, results = load_vlm(folder), {}
    for task in tasks:
        rng, accs, exact, parsed = random.Random(f"{seed}-{task}"), [], 0, 0
        for _ in range(n):
            prompt, target = make_prompt(task, rng, "train" if task == "caption" else "heldout")
            prompt.generated = None
            text = encoder.generate(prompt, layers=[0], sampling=Sampling(max_new_tokens=96)).texts[0]
            pred = parse_description(text)
            parsed += pred is not None
            exact += judge_text(text, target).exact  # the scene itself, objects in any order
            accs.append(score(pred, target).accuracy if pred is not None else 0.0)
        results[task] = {"fact_accuracy": sum(accs) / n, "exact": exact / n, "parsed": parsed / n, "n": n}
        log.info("%s: %s", task, results[task])
    return results


def parse_args(argv=None) -> VLMTrainConfig:
    p = argparse.ArgumentParser(description="Train the toy VLM from scratch.")
    d = VLMTrainConfig()
    p.add_argument("--out", default=d.out)
    p.add_argument("--minutes", type=float, default=d.minutes)
    p.add_argument("--preset", default=d.preset, choices=("toy", "test"))
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-steps", type=int, default=d.max_steps)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--mix", default=",".join(map(str, d.mix)),
                   help=f"task weights, comma-separated, in the order {','.join(TASKS)}")
    p.add_argument("--init-from", default=d.init_from, help="continue training this toy VLM folder")
    p.add_argument("--precision", default=d.precision, choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 autocast only where a short probe finds it faster on this machine")
    p.add_argument("--rewrite-order", default=d.rewrite_order, choices=("canonical", "request"),
                   help="T2I rewrites: objects by cell (canonical) or in the request's order")
    p.add_argument("--edit-rewrite", default=None, choices=EDIT_REWRITES,
                   help="edit rewrites: the target's description by cell, the same in the source's object order "
                        "(in_place), or the source image's description first and then that (source_first); "
                        "default: the style --init-from was trained with, else target")
    p.add_argument("--device", default=d.device, choices=("cpu", "cuda", "auto"))
    p.add_argument("--workers", type=int, default=d.workers, help="batch-drawing processes (for a GPU)")
    p.add_argument("--augment", type=float, default=d.augment,
                   help="share of train-split T2I / edit requests with function words dropped (never reordered)")
    p.add_argument("--edit-kinds", default="",
                   help=f"edit kind weights, comma-separated, in the order {','.join(EDIT_KINDS)} (default: equal)")
    a = p.parse_args(argv)
    try:
        mix = parse_weights("--mix", a.mix, TASKS)
        edit_kinds = parse_weights("--edit-kinds", a.edit_kinds, EDIT_KINDS) if a.edit_kinds else ()
    except ValueError as e:
        p.error(str(e))
    return VLMTrainConfig(out=a.out, minutes=a.minutes, preset=a.preset, batch_size=a.batch_size,
                          lr=a.lr, max_steps=a.max_steps, seed=a.seed, log_every=a.log_every, precision=a.precision,
                          threads=a.threads, warmup_steps=a.warmup_steps, init_from=a.init_from, mix=mix,
                          augment=a.augment, device=a.device, workers=a.workers, rewrite_order=a.rewrite_order,
                          edit_rewrite=stage_edit_rewrite(a.edit_rewrite, a.init_from),
                          edit_kinds=edit_kinds)


def parse_weights(flag: str, text: str, names: tuple) -> tuple:
    """``text`` ("w1,w2,...") as one non-negative weight per name, not all zero; else ValueError saying so."""
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != len(names) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"{flag} should be {len(names)} non-negative weights ({','.join(names)}), found {text!r}")
    return weights
