"""The on-disk tensor cache (train/batches.py TensorCache): loose files packed into shards, read by
every process before, during and after a pack."""
import torch

from unifusion_core.train.batches import TensorCache


def _values(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"{seed}-{i:03d}": torch.randn(4, 3 + i, 8, generator=g).half() for i in range(n)}


def test_pack_moves_loose_files_into_shards_that_every_reader_finds(tmp_path):
    values = _values(12)
    writer = TensorCache(str(tmp_path / "c"))
    for k, v in values.items():
        writer.put(k, v)
    early = TensorCache(str(tmp_path / "c"))  # a run that started before the pack ...
    assert torch.equal(early.get("0-000"), values["0-000"])  # ... and read a loose file

    per_value = values["0-005"].numel() * 2
    assert writer.pack(shard_bytes=per_value * 4) >= 3  # several shards, each at most a few values
    assert not list((tmp_path / "c").glob("*.safetensors"))  # nothing loose left
    shards = sorted((tmp_path / "c" / "shards").glob("shard-*.safetensors"))
    assert len(shards) >= 3

    for reader in (early, writer, TensorCache(str(tmp_path / "c"))):  # before, the packer, a new run
        assert len(reader) == 12
        for k, v in values.items():
            assert reader.has(k)
            got = reader.get(k)
            assert got.dtype == torch.float16 and torch.equal(got, v), k
        assert not reader.has("missing") and reader.get("missing") is None


def test_a_second_pack_adds_shards_and_leaves_the_old_ones_as_written(tmp_path):
    cache = TensorCache(str(tmp_path / "c"))
    first, more = _values(3, seed=1), _values(4, seed=2)
    for k, v in first.items():
        cache.put(k, v)
    assert cache.pack() == 1
    (old,) = (tmp_path / "c" / "shards").glob("shard-*.safetensors")
    stamp = old.stat().st_mtime_ns
    reader = TensorCache(str(tmp_path / "c"))
    assert len(reader) == 3
    for k, v in more.items():
        cache.put(k, v)
    assert reader.has("2-000") and len(reader) == 7  # loose values of a run still filling the folder
    assert cache.pack() == 1 and cache.pack() == 0  # nothing loose: nothing written
    assert old.stat().st_mtime_ns == stamp and len(list(old.parent.glob("shard-*.safetensors"))) == 2
    for k, v in {**first, **more}.items():
        assert torch.equal(reader.get(k), v), k  # the reader had seen them loose: found in the new shard


def test_memory_and_online_caches_pack_nothing(tmp_path):
    mem, online = TensorCache("memory"), TensorCache("online")
    mem.put("a", torch.ones(2))
    online.put("a", torch.ones(2))
    assert mem.pack() == 0 and online.pack() == 0
    assert len(mem) == 1 and torch.equal(mem.get("a"), torch.ones(2)) and online.get("a") is None
