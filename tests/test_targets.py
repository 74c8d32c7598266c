"""The block-permuted control target: its permutations, and the Ray Data stream that cuts each window at the
partner row while responses, masks and ids stay the row's own."""
from __future__ import annotations

import re

import numpy as np
import pytest

from braintune_dist.config import from_dict
from braintune_dist.data.lebel import DatasetError
from braintune_dist.data.shards import ShardConfig, write_shards
from braintune_dist.data.stream import StreamConfig, iter_kwargs, make_dataset
from braintune_dist.errors import UserError
from braintune_dist.targets import TargetSettings
from braintune_dist.targets.shuffled import chunk_permutation, partner_rows, story_partners

SHUFFLED = TargetSettings(kind="shuffled", chunk_trs=3, min_distance=2)     # sim stories: 16 rows = 5 blocks + 1


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- permutations
@pytest.mark.parametrize("n_rows, chunk, d", [(300, 15, 10), (405, 15, 10), (412, 15, 10), (64, 4, 3), (47, 15, 10)])
def test_chunk_permutation_moves_whole_blocks_far(n_rows, chunk, d):
    p = chunk_permutation(n_rows, chunk, d, rng(0))
    assert p.shape == (n_rows,) and p.dtype == np.int64
    assert (np.sort(p) == np.arange(n_rows)).all()                         # a permutation: every window once
    k, tail = divmod(n_rows, chunk)
    # every row moves as far as the story allows (the farthest possible: half its blocks)
    assert (np.abs(p - np.arange(n_rows)) >= min(d, k // 2) * chunk).all()
    # rows keep their order within a block: one run, or two in the block that trades its head with the tail
    runs = [1 + int((np.diff(p[j * chunk:(j + 1) * chunk]) != 1).sum()) for j in range(k)]
    assert runs.count(2) == (1 if tail else 0) and set(runs) <= {1, 2}
    assert (np.diff(p[k * chunk:]) == 1).all()
    if not tail:                                                           # whole blocks onto whole blocks
        assert (p.reshape(k, chunk)[:, 0] % chunk == 0).all()


def test_chunk_permutation_is_seeded():
    a, b, c = (chunk_permutation(405, 15, 10, rng(s)) for s in (1, 1, 2))
    assert (a == b).all() and (a != c).any()
    with pytest.raises(UserError, match="two"):
        chunk_permutation(20, 15, 10, rng(0))


def test_partner_rows_chunks_per_story_and_short_story_named():
    n_rows = {"a": 120, "b": 405, "tiny": 20}
    got = partner_rows(["a", "b"], n_rows, TargetSettings(kind="shuffled"), seed=7)
    assert (got["a"][0] == "a").all() and (got["b"][0] == "b").all()       # chunks stay within their story
    # a story's permutation does not depend on which other stories the selection keeps
    assert (partner_rows(["b"], n_rows, TargetSettings(kind="shuffled"), seed=7)["b"][1] == got["b"][1]).all()
    assert (partner_rows(["b"], n_rows, TargetSettings(kind="shuffled"), seed=8)["b"][1] != got["b"][1]).any()
    with pytest.raises(UserError, match=r"'tiny' has 20 response rows.*chunk_trs=15"):
        partner_rows(["a", "tiny"], n_rows, TargetSettings(kind="shuffled"), seed=7)


def test_story_partners_are_other_stories():
    stories = [f"s{i}" for i in range(6)]
    n_rows = {s: 10 + 3 * i for i, s in enumerate(stories)}
    for seed in range(20):
        got = story_partners(stories, n_rows, rng(seed))
        partners = {s: got[s][0][0] for s in stories}
        assert all(p != s for s, p in partners.items()) and sorted(partners.values()) == stories   # a derangement
        for s, (names, rows) in got.items():
            m = n_rows[partners[s]]
            assert (names == partners[s]).all() and len(rows) == n_rows[s] and (rows < m).all()
            assert (rows[:m] == np.arange(min(m, n_rows[s]))).all()          # row i, where the partner has one
    held_out = story_partners(["v"], {"v": 12, **n_rows}, rng(0), pool=stories + ["v"])
    assert held_out["v"][0][0] in stories
    with pytest.raises(UserError, match="pairs stories"):
        story_partners(["s0"], n_rows, rng(0))


def test_fit_config_takes_the_target():
    from braintune_dist.train.config import FitConfig
    cfg = from_dict(FitConfig, {"target": {"kind": "shuffled", "shuffle": "story", "chunk_trs": 5}})
    assert cfg.target == TargetSettings(kind="shuffled", shuffle="story", chunk_trs=5)
    assert FitConfig().target.kind == "brain"


# --------------------------------------------------------------------------- stream
def collect(ds, cfg: StreamConfig) -> dict[tuple[int, int], dict]:
    """One epoch, by (story, row)."""
    out = {}
    for b in ds.iter_batches(**iter_kwargs(cfg), batch_format="numpy"):
        for i, key in enumerate(zip(b["story"].tolist(), b["row"].tolist())):
            assert key not in out
            out[key] = {k: v[i] for k, v in b.items()}
    return out


def test_shuffled_stream_cuts_windows_at_partner_rows(ray_local, sim_shards):
    from braintune_dist.data.manifest import load_manifest
    _, shards = sim_shards
    m = load_manifest(shards)
    assert m["audio_store"] == "story"
    plain = StreamConfig(shuffle="none", batch_size=8)
    ref = {split: collect(make_dataset(shards, split, plain), plain) for split in ("train", "val")}
    names = {split: m["splits"][split] for split in ("train", "val")}
    n_rows = {s: v["n_rows"] for s, v in m["stories"].items()}

    for target, cfg in [(SHUFFLED, StreamConfig(shuffle="global", seed=4, batch_size=5)),
                        (TargetSettings(kind="shuffled", shuffle="story"), plain)]:
        for split in ("train", "val"):
            got = collect(make_dataset(shards, split, cfg, target=target, seed=11), cfg)
            assert got.keys() == ref[split].keys()
            pool = None if split == "train" else names["train"]
            partners = partner_rows(names[split], n_rows, target, 11, pool)
            used = []
            for (s, r), row in got.items():
                mine = ref[split][(s, r)]
                for col in ("responses", "mask", "story", "row", "tr"):  # the row's own target and ids
                    np.testing.assert_array_equal(row[col], mine[col])
                who, at = partners[names[split][s]][0][r], int(partners[names[split][s]][1][r])
                home = "train" if who in names["train"] else split       # val pairs with training audio in 'story'
                key = (names[home].index(who), at)
                np.testing.assert_array_equal(row["audio"], ref[home][key]["audio"])
                assert not np.array_equal(row["audio"], mine["audio"])
                used.append((home, key))
            if target.shuffle == "chunks":                               # every window once: a permutation
                assert sorted(used) == sorted((split, k) for k in ref[split])
            else:
                assert all(home == "train" and names["train"][k[0]] != names[split][s]
                           for (home, k), (s, _) in zip(used, got))

    # the same seed gives the same pairs; another seed other pairs
    again = collect(make_dataset(shards, "train", plain, target=SHUFFLED, seed=11), plain)
    other = collect(make_dataset(shards, "train", plain, target=SHUFFLED, seed=12), plain)
    first = collect(make_dataset(shards, "train", plain, target=SHUFFLED, seed=11), plain)
    assert all(np.array_equal(again[k]["audio"], first[k]["audio"]) for k in first)
    assert any(not np.array_equal(other[k]["audio"], first[k]["audio"]) for k in first)


def test_windows_store_is_refused(sim_shards, tmp_path):
    data, _ = sim_shards
    out = tmp_path / "windows"
    write_shards(ShardConfig(window=2.0, audio_store="windows", splits=["train"]), data, str(out))
    with pytest.raises(DatasetError, match=rf"{re.escape(str(out))} .*audio_store: windows.*with audio_store: story"):
        make_dataset(out, "train", StreamConfig(), target=TargetSettings(kind="shuffled"))
