"""Ray Data reader: full epochs, shuffling, bind vs pair mode, data-size selection, checksums."""
from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from braintune_dist.data.lebel import DataConfig, DatasetError
from braintune_dist.data.shards import ShardConfig, write_shards
from braintune_dist.data.manifest import load_manifest
from braintune_dist.data.stream import StreamConfig, format_summary, iter_kwargs, make_dataset, select, summarize

from conftest import TINY_MISSING, TINY_PARTICIPANTS, response_code


@pytest.fixture(scope="module")
def shard_dir(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "shards"
    write_shards(ShardConfig(spaces=["common", "voxel"], rows_per_shard=4, window=4.0), DataConfig(root=str(tiny_root), val_stories=["bravo"]), str(out))
    return out


@pytest.fixture(scope="module")
def reference(ray_local, shard_dir):
    """One unshuffled bind-mode epoch in common space, the reference the other streams are compared to."""
    cfg = StreamConfig(shuffle="none", batch_size=4)
    return collect(make_dataset(shard_dir, "train", cfg), cfg)


def collect(ds, cfg: StreamConfig) -> dict[str, np.ndarray]:
    """One epoch through iter_torch_batches, concatenated; checks every batch holds torch tensors."""
    parts: dict[str, list] = {}
    for batch in ds.iter_torch_batches(**iter_kwargs(cfg)):
        for k, v in batch.items():
            assert isinstance(v, torch.Tensor)
            parts.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def keys(b) -> list[tuple[int, int]]:
    return list(zip(b["story"].tolist(), b["row"].tolist()))


# --------------------------------------------------------------------------- epochs + shuffling
def test_every_row_once_per_epoch_and_shuffle_keeps_content(ray_local, shard_dir, reference):
    m = load_manifest(shard_dir)
    ref = reference
    n = m["rows"]["train"]
    assert len(ref["audio"]) == n and len(set(keys(ref))) == n            # every window exactly once
    assert ref["audio"].shape == (n, 4 * 16_000) and ref["responses"].shape == (n, 3, 20)
    assert ref["mask"].dtype == bool and ref["mask"].shape == (n, 3)
    by_key = {k: i for i, k in enumerate(keys(ref))}

    cfg = StreamConfig(shuffle="global", seed=3, batch_size=5)
    ds = make_dataset(shard_dir, "train", cfg)
    epochs = [collect(ds, cfg) for _ in range(2)]                        # the same Dataset, two epochs
    orders = [keys(e) for e in epochs]
    for e, order in zip(epochs, orders):
        assert Counter(order) == Counter(keys(ref))                      # each row exactly once
        idx = [by_key[k] for k in order]
        for col in ("audio", "responses", "mask", "tr"):                 # same content, new order
            np.testing.assert_array_equal(e[col], ref[col][idx])
    assert orders[0] != orders[1]                                        # reseeded each epoch
    assert orders[0] != sorted(orders[0])

    cheap = StreamConfig(shuffle="blocks", seed=1, local_shuffle_buffer=8, batch_size=4)
    b = collect(make_dataset(shard_dir, "train", cheap), cheap)
    assert Counter(keys(b)) == Counter(keys(ref)) and keys(b) != sorted(keys(b))

    # shards of a few MB are read by this process (driver_read_mb); through Ray Data's read tasks: the same rows
    tasks = StreamConfig(shuffle="global", seed=3, batch_size=5, driver_read_mb=0)
    e = collect(make_dataset(shard_dir, "train", tasks), tasks)
    assert Counter(keys(e)) == Counter(keys(ref))
    for col in ("audio", "responses", "mask"):
        np.testing.assert_array_equal(e[col], ref[col][[by_key[k] for k in keys(e)]])


# --------------------------------------------------------------------------- bind vs pair
def test_bind_keeps_listeners_together_and_equals_pair_regrouped(ray_local, shard_dir, reference):
    m = load_manifest(shard_dir)
    names = m["splits"]["train"]
    bcfg = StreamConfig(shuffle="none", space="voxel")
    bind = collect(make_dataset(shard_dir, "train", bcfg), bcfg)
    # one row per window, mask = who heard the story; voxel responses decode to (subject, story, row)
    for i, (s, r) in enumerate(keys(bind)):
        story = names[s]
        for j, sub in enumerate(TINY_PARTICIPANTS):
            heard = (sub, story) not in TINY_MISSING
            assert bind["mask"][i, j] == heard
            Y = bind[f"voxel_{sub}"][i]
            expect = response_code(sub, story) + r + 0.001 * np.arange(TINY_PARTICIPANTS[sub])
            np.testing.assert_allclose(Y, expect if heard else 0 * expect, rtol=1e-6)

    pcfg = StreamConfig(shuffle="none", mode="pair", space="voxel", batch_size=7)
    pair = collect(make_dataset(shard_dir, "train", pcfg), pcfg)
    assert len(pair["audio"]) == bind["mask"].sum() == summarize(shard_dir, "train", pcfg)["rows"]
    row_of = {k: i for i, k in enumerate(keys(bind))}
    seen = set()
    for i, (k, j) in enumerate(zip(keys(pair), pair["participant"].tolist())):
        b = row_of[k]
        sub = list(TINY_PARTICIPANTS)[j]
        n_vox = TINY_PARTICIPANTS[sub]
        assert bind["mask"][b, j] and pair["n_voxels"][i] == n_vox
        np.testing.assert_array_equal(pair["audio"][i], bind["audio"][b])
        np.testing.assert_array_equal(pair["responses"][i, :n_vox], bind[f"voxel_{sub}"][b])
        assert not pair["responses"][i, n_vox:].any()                    # zero padding to max n_voxels
        seen.add((k, j))
    assert len(seen) == len(pair["audio"])                               # no (window, participant) twice
    assert sum(v.nbytes for v in pair.values()) == pytest.approx(summarize(shard_dir, "train", pcfg)["mb"] * 1e6)

    # common space: pair rows regrouped by window == the bind block
    ccfg = StreamConfig(shuffle="none", mode="pair", batch_size=16)
    cpair = collect(make_dataset(shard_dir, "train", ccfg), ccfg)
    cbind = reference
    regrouped = np.zeros_like(cbind["responses"])
    for k, j, y in zip(keys(cpair), cpair["participant"].tolist(), cpair["responses"]):
        regrouped[keys(cbind).index(k), j] = y
    np.testing.assert_array_equal(regrouped, cbind["responses"])


# --------------------------------------------------------------------------- data-size selection
def test_selection_counts_nesting_and_hours(shard_dir):
    m = load_manifest(shard_dir)
    subs = list(TINY_PARTICIPANTS)
    for seed in range(4):
        sizes = [select(m, "train", StreamConfig(n_participants=n, selection_seed=seed)).participants
                 for n in (1, 2, 3)]
        assert [len(p) for p in sizes] == [1, 2, 3]
        assert set(sizes[0]) <= set(sizes[1]) <= set(sizes[2]) == set(subs)
        assert all(p == [s for s in subs if s in p] for p in sizes)      # slot order = manifest order
    firsts = {tuple(select(m, "train", StreamConfig(n_participants=1, selection_seed=s)).participants)
              for s in range(12)}
    assert len(firsts) > 1                                               # the seed matters
    assert select(m, "train", StreamConfig(participants=["UTS03", "UTS01"])).participants == ["UTS01", "UTS03"]
    with pytest.raises(DatasetError, match="UTS07"):
        select(m, "train", StreamConfig(participants=["UTS07"]))

    heard = {s: [st for st in m["splits"]["train"] if (s, st) not in TINY_MISSING] for s in subs}
    one, two = (select(m, "train", StreamConfig(stories_per_participant=k, selection_seed=5)) for k in (1, 2))
    for s in subs:
        assert len(one.stories[s]) == 1 and len(two.stories[s]) == 2
        assert set(one.stories[s]) <= set(two.stories[s]) <= set(heard[s])

    for seed in range(12):     # a participant's stories do not depend on who else is selected
        small, big = (select(m, "train", StreamConfig(n_participants=n, stories_per_participant=1,
                                                      selection_seed=seed)) for n in (1, 3))
        (p,) = small.participants
        assert small.stories[p] == big.stories[p]

    n_rows = {s: m["stories"][s]["n_rows"] for s in m["splits"]["train"]}
    prev = None
    for hours in (0.001, 0.005, 0.01, 1.0):                              # 1 row = 2 s = 0.000556 h
        sel = select(m, "train", StreamConfig(hours_per_participant=hours, selection_seed=5))
        for s in subs:
            got = sel.stories[s]
            h = sum(n_rows[x] for x in got) * 2.0 / 3600
            assert sel.hours[s] == pytest.approx(h)
            # whole stories until the budget is reached: at most one story beyond it
            assert h >= hours or set(got) == set(heard[s])
            assert h - max(n_rows[x] for x in got) * 2.0 / 3600 < hours
            if prev is not None:
                assert set(prev.stories[s]) <= set(got)
        prev = sel
    with pytest.raises(DatasetError, match="not both"):
        select(m, "train", StreamConfig(hours_per_participant=1, stories_per_participant=1))
    # the budget applies to training splits only
    assert select(m, "val", StreamConfig(stories_per_participant=0)).stories == \
        select(m, "val", StreamConfig(stories_per_participant=1, n_participants=3)).stories


def test_selected_stream_masks_and_drops_rows(ray_local, shard_dir):
    m = load_manifest(shard_dir)
    cfg = StreamConfig(n_participants=2, stories_per_participant=1, selection_seed=2, shuffle="none")
    sel = select(m, "train", cfg)
    out = collect(make_dataset(shard_dir, "train", cfg), cfg)
    summary = summarize(shard_dir, "train", cfg)
    assert len(out["audio"]) == summary["rows"] == sum(m["stories"][s]["n_rows"] for s in sel.kept_stories())
    assert out["mask"].shape[1] == 2 and out["mask"].any(axis=1).all()   # nobody left → row dropped
    keep = sel.keep()                                                    # (n_stories, 2)
    for i, s in enumerate(out["story"]):
        heard = [(p, sel.story_names[s]) not in TINY_MISSING for p in sel.participants]
        np.testing.assert_array_equal(out["mask"][i], keep[s] & heard)
    assert not out["responses"][~out["mask"]].any()                      # masked-out slots carry zeros
    assert out["mask"].sum() == summary["pairs"]
    assert sum(v.nbytes for v in out.values()) == pytest.approx(summary["mb"] * 1e6)   # tensor bytes/epoch
    line = format_summary(summary)
    assert f"{summary['rows']} rows" in line and "2 participants" in line


# --------------------------------------------------------------------------- integrity
def test_missing_or_corrupt_shard_is_named_before_reading(shard_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(shard_dir, bad)
    m = load_manifest(bad)
    victim = bad / m["shards"][1]["file"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF                                         # one flipped byte, same size
    victim.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=f"{m['shards'][1]['file']}: sha256 mismatch"):
        make_dataset(bad, "train", StreamConfig())
    make_dataset(bad, "val", StreamConfig())                             # other splits are still fine
    victim.write_bytes(bytes(data[:-10]))
    with pytest.raises(DatasetError, match="truncated"):
        make_dataset(bad, "train", StreamConfig(verify="size"))
    victim.unlink()
    with pytest.raises(DatasetError, match=f"{m['shards'][1]['file']} listed in manifest.json is missing"):
        make_dataset(bad, "train", StreamConfig(verify="none"))
    (bad / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="manifest.json not found"):
        make_dataset(bad, "train")
    with pytest.raises(DatasetError, match="split 'dev'"):
        make_dataset(shard_dir, "dev")
