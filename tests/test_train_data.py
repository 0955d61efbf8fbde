"""Manifest parsing, buckets, deterministic resumable order, and bad-data handling of the trainer."""
import json

import pytest
from PIL import Image

from unifusion_core.errors import UniFusionError
from unifusion_core.train.config import TrainConfig, parse_args
from unifusion_core.train.data import Dataset, bucket_sizes, epoch_batches, load_manifest, micro_batch


def _write(tmp_path, lines):
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def _img(path, size=(16, 16), color=(255, 0, 0)):
    Image.new("RGB", size, color).save(path)
    return path.name


@pytest.mark.parametrize("lines,pattern", [
    ([], "manifest is empty"),
    (['{"task": "t2i", "target": "a.png", "prompt": "x"}', "{not json"], "line 2: not valid JSON"),
    (['{"task": "paint", "target": "a.png", "prompt": "x"}'], "line 1: task 'paint' is not one of t2i, edit, recon"),
    (['{"task": "t2i", "prompt": "x"}'], "line 1: missing 'target'"),
    (['{"task": "edit", "target": "a.png", "prompt": "x"}'], "line 1: an edit record needs 'refs'"),
    (['{"task": "t2i", "target": "a.png"}'], "line 1: a t2i record needs a 'prompt'"),
    (['[1, 2]'], "line 1: expected a JSON object"),
])
def test_malformed_manifest_is_one_error_naming_the_line(tmp_path, lines, pattern):
    with pytest.raises(UniFusionError, match=pattern) as err:
        load_manifest(_write(tmp_path, lines))
    assert str(tmp_path / "m.jsonl") in str(err.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(UniFusionError, match="no such manifest"):
        load_manifest(tmp_path / "nope.jsonl")


def test_paths_are_relative_to_the_manifest_and_blank_lines_ignored(tmp_path):
    name = _img(tmp_path / "a.png")
    recs = load_manifest(_write(tmp_path, ["", json.dumps({"task": "recon", "target": name}), ""]))
    assert len(recs) == 1 and recs[0].target == tmp_path / "a.png" and recs[0].line == 2


def test_buckets_keep_area_and_unit():
    sizes = bucket_sizes(64, "1:1,16:9,9:16", 8)
    assert sizes[0] == (64, 64)
    for w, h in sizes:
        assert w % 8 == 0 and h % 8 == 0 and 0.8 < w * h / 64 ** 2 < 1.2
    assert sizes[1][0] > sizes[1][1] and sizes[2][0] < sizes[2][1]


def test_bucketing_assigns_by_aspect_and_order_is_deterministic(tmp_path):
    lines = []
    for i in range(6):
        size = (32, 16) if i % 2 else (16, 16)
        lines.append(json.dumps({"task": "t2i", "target": _img(tmp_path / f"{i}.png", size), "prompt": str(i)}))
    ds = Dataset.build(load_manifest(_write(tmp_path, lines)), 16, "1:1,2:1", 4)
    assert ds.assignment == [0, 1, 0, 1, 0, 1]
    a = epoch_batches(ds, 0, seed=1, global_batch=2)
    assert a == epoch_batches(ds, 0, seed=1, global_batch=2) and a != epoch_batches(ds, 1, seed=1, global_batch=2)
    for batch in a:  # a batch never mixes buckets
        assert len({ds.assignment[i] for i in batch}) == 1
    # two processes split each global batch; micro_batch is a pure function of the step
    g = [micro_batch(ds, 5, 1, 1, r, 2) for r in (0, 1)]
    assert g[0] != g[1] and micro_batch(ds, 5, 1, 1, 0, 2) == g[0]


def test_missing_and_corrupt_files_are_skipped_counted_and_replaced(tmp_path, caplog):
    good = _img(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _img(tmp_path / "trunc.png", (64, 64))
    data = (tmp_path / "trunc.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    lines = [json.dumps({"task": "t2i", "target": t, "prompt": t}) for t in ("missing.png", "corrupt.png", "trunc.png", good)]
    ds = Dataset.build(load_manifest(_write(tmp_path, lines)), 16, "1:1", 4)
    assert ds.skipped == {0, 1}  # unopenable at start
    with caplog.at_level("WARNING"):
        used, target, refs = ds.load(2)  # truncated: fails on decode, replaced by the next good record
    assert used == 3 and ds.skipped == {0, 1, 2} and "line 3" in caplog.text


def test_all_bad_is_one_clear_error(tmp_path):
    lines = [json.dumps({"task": "t2i", "target": "missing.png", "prompt": "x"})]
    with pytest.raises(UniFusionError, match="no usable training record"):
        Dataset.build(load_manifest(_write(tmp_path, lines)), 16, "1:1", 4)


def test_config_file_and_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.01\nmax_steps: 7\n")
    t = parse_args(["--config", str(cfg), "--max_steps", "9", "--grad_checkpointing", "true"])
    assert (t.lr, t.max_steps, t.grad_checkpointing) == (0.01, 9, True)
    cfg.write_text("lr: 0.01\nbogus: 1\n")
    with pytest.raises(UniFusionError, match="unknown config fields"):
        parse_args(["--config", str(cfg)])
    with pytest.raises(UniFusionError, match="cfg_dropout must lie in"):
        TrainConfig(cfg_dropout=2.0)


@pytest.mark.parametrize("field,value,expected", [("vlm_device", "gpu", "vlm_device must be 'auto' or 'cpu', found 'gpu'"),
                                                 ("strategy", "tp", "strategy must be 'ddp' or 'fsdp', found 'tp'")])
def test_bad_placement_settings_are_one_sentence(field, value, expected):
    from unifusion_core.train.config import TrainConfig

    with pytest.raises(UniFusionError, match=expected):
        TrainConfig(**{field: value})
