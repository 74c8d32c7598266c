"""The block-permuted control target: each response row is paired with the audio of a partner row.

Pairing responses with permuted audio gives the same set of (audio, response) pairs as permuting the
responses, and with the 'story' audio store it costs a small table: every row's window is cut at its partner
row's ``end_sample`` in the partner's story instead of its own (``data/stream.py``). Responses, masks and
ids stay, so batches keep their layout. The table is drawn once per fit from its seed: every epoch sees the
same pairs, as a model tuned on a fixed permuted dataset would.

* ``chunks``: a story's rows are cut into blocks of ``chunk_trs``; each block takes the audio of a block at
  least ``min_distance`` blocks away, rows in order. A story of fewer than ``2 * min_distance`` blocks gets the
  farthest moves its length allows (``len // 2`` blocks). The rows after the last whole block (the tail, fewer
  than ``chunk_trs``) trade places with the first rows of the block whose own move keeps both far from the
  tail, so every window is still used once and none is paired with nearby audio. A story of fewer than two
  blocks is refused (there is nothing to permute it with).
* ``story``: each story takes the audio of another story (a derangement over the split's stories): row i
  the partner's row i, or a random row of the partner where the partner is shorter. A held-out split (val,
  test) draws each story's partner among all the training split's stories (only their audio is read), so its
  loss, which selects and early-stops the control, is measured on shuffled pairs as well.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from braintune_dist.data.manifest import display, locate
from braintune_dist.errors import DatasetError, UserError
from braintune_dist.seeding import rng as seeded_rng
from braintune_dist.targets import TargetSettings

Pointers = dict[str, tuple[np.ndarray, np.ndarray]]


def chunk_permutation(n_rows: int, chunk: int, min_distance: int, rng: np.random.Generator) -> np.ndarray:
    """Partner row of every row under a block permutation of one story (see the module docstring).

    Parameters
    ----------
    n_rows : int  rows of the story; at least ``2 * chunk``
    chunk : int  rows per block
    min_distance : int  blocks each block moves at least (capped at half the whole blocks)
    rng : numpy Generator

    Returns
    -------
    partner : (n_rows,) int64  a permutation of ``range(n_rows)``: row i is paired with row ``partner[i]``
    """
    k = n_rows // chunk
    if k < 2:
        raise UserError(f"{n_rows} rows hold {k} whole block(s) of {chunk}: a block permutation needs two")
    d = min(min_distance, k // 2)
    # a cyclic shift by s in [d, k - d] moves every block by s or k - s ≥ d; random exchanges of the blocks' sources
    # that keep both moves ≥ d then mix it (a random valid permutation, not uniform over all of them)
    src = (np.arange(k) + rng.integers(d, k - d + 1)) % k
    for a, b in rng.integers(0, k, size=(20 * k, 2)):
        if abs(src[b] - a) >= d and abs(src[a] - b) >= d:
            src[a], src[b] = src[b], src[a]
    partner = (src[:, None] * chunk + np.arange(chunk)).ravel()              # (k * chunk,)
    tail = n_rows - k * chunk
    if tail:
        # the donor block c: both c (which takes the tail's audio) and its source (whose audio the tail takes)
        # as far from the tail (block k) as the permutation allows
        c = int(np.argmax(np.minimum(k - np.arange(k), k - src)))
        head = slice(c * chunk, c * chunk + tail)
        partner = np.concatenate([partner, partner[head]])
        partner[head] = np.arange(k * chunk, n_rows)
    return partner.astype(np.int64)


def story_partners(stories: list[str], n_rows: dict[str, int], rng: np.random.Generator,
                   pool: list[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each story's partner story and rows under the 'story' permutation.

    Parameters
    ----------
    stories : the split's stories
    n_rows : story → response rows (covers ``stories`` and ``pool``)
    rng : numpy Generator
    pool : stories to draw partners from (each drawn independently, never the story itself); None = a
        derangement of ``stories`` (each story's audio used by exactly one other story)

    Returns
    -------
    partners : story → (partner story per row (n_rows,) object, partner row per row (n_rows,) int64)
    """
    if pool is None:
        if len(stories) < 2:
            raise UserError(f"fit.target.shuffle='story' pairs stories with each other: the split has {stories}")
        while True:                     # rejection: a uniform derangement in e ≈ 2.7 draws on average
            order = rng.permutation(len(stories))
            if (order != np.arange(len(stories))).all():
                break
        partner = {s: stories[o] for s, o in zip(stories, order)}
    else:
        partner = {}
        for s in stories:
            others = [p for p in pool if p != s]
            if not others:
                raise UserError(f"fit.target.shuffle='story': no training story to pair {s!r} with (training: {pool})")
            partner[s] = others[rng.integers(len(others))]
    out = {}
    for s in stories:
        p, rows = partner[s], np.arange(n_rows[s])
        short = rows >= n_rows[p]                                    # past the partner's end: a random row of it
        rows[short] = rng.integers(0, n_rows[p], int(short.sum()))
        out[s] = (np.full(len(rows), p, dtype=object), rows.astype(np.int64))
    return out


def partner_rows(stories: list[str], n_rows: dict[str, int], settings: TargetSettings, seed: int,
                 pool: list[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Partner (story, row) of every row of ``stories`` under ``settings.shuffle``, deterministic per ``seed``.

    ``pool``: see :func:`story_partners` ('story' only; 'chunks' permutes each story within itself, with a
    generator of its own so a story's permutation does not depend on which others are selected).

    Returns
    -------
    partners : story → (partner story per row (n_rows,) object, partner row per row (n_rows,) int64)
    """
    if settings.shuffle == "story":
        return story_partners(stories, n_rows, seeded_rng(seed, "shuffled-story"), pool)
    out = {}
    for s in stories:
        if n_rows[s] < 2 * settings.chunk_trs:
            raise UserError(f"story {s!r} has {n_rows[s]} response rows: fit.target.shuffle='chunks' needs two "
                            f"blocks of fit.target.chunk_trs={settings.chunk_trs}; lower fit.target.chunk_trs or set "
                            "fit.target.shuffle='story'")
        perm = chunk_permutation(n_rows[s], settings.chunk_trs, settings.min_distance,
                                 seeded_rng(seed, "shuffled-chunks", zlib.crc32(s.encode())))
        out[s] = (np.full(n_rows[s], s, dtype=object), perm)
    return out


# --------------------------------------------------------------------------- shards
@dataclass
class Pairing:
    """The control's partners on one split of a shard set, and what reading them takes."""

    partners: dict[str, tuple[np.ndarray, np.ndarray]]
    """Story → (partner story per row, partner row per row), see :func:`partner_rows`."""
    audio_stories: list[str]
    """Every story whose audio the split's windows are cut from: its own and partner stories."""
    files: list[dict]
    """Manifest entries (shards, story audio) of partner stories outside the split's own, to verify."""


def plan(manifest: dict, shard_dir, split: str, kept: list[str], settings: TargetSettings, seed: int) -> Pairing:
    """The control's pairing of ``split``'s ``kept`` stories (no file read); ``DatasetError`` when the shards
    embed their windows' audio (a window cannot then be cut at another row's end)."""
    if manifest["audio_store"] != "story":
        raise DatasetError(f"target.kind='shuffled' cuts each window at its partner row, but the shards in "
                           f"{display(shard_dir)} embed their audio (audio_store: windows): rewrite them with "
                           "audio_store: story")
    n_rows = {s: v["n_rows"] for s, v in manifest["stories"].items()}
    pool = None if split == "train" else manifest["splits"].get("train", [])
    partners = partner_rows(kept, n_rows, settings, seed, pool)
    extra = sorted({p for names, _ in partners.values() for p in set(names)} - set(kept))
    files = [sh for sh in manifest["shards"] if set(sh["stories"]) & set(extra)]
    return Pairing(partners, list(kept) + extra, files + [manifest["audio_files"][s] for s in extra])


def audio_pointers(shard_dir, manifest: dict, pairing: Pairing) -> Pointers:
    """Story → (partner story per row (n_rows,) object, partner ``end_sample`` per row (n_rows,) int64), read
    from the ``story, row, end_sample`` columns of the shards holding the stories involved."""
    import pyarrow.parquet as pq

    fs, base = locate(str(shard_dir))
    wanted = set(pairing.audio_stories)
    ends = {s: np.zeros(manifest["stories"][s]["n_rows"], np.int64) for s in wanted}       # story → (n_rows,)
    for sh in manifest["shards"]:
        if wanted & set(sh["stories"]):
            t = pq.read_table(f"{base}/{sh['file']}", columns=["story", "row", "end_sample"], filesystem=fs)
            names = np.asarray(t.column("story").to_pylist(), dtype=object)
            rows, end = t.column("row").to_numpy(), t.column("end_sample").to_numpy()
            for s in wanted & set(sh["stories"]):
                at = names == s
                ends[s][rows[at]] = end[at]
    out = {}
    for s, (who, rows) in pairing.partners.items():
        at = np.empty(len(rows), np.int64)
        for p in set(who.tolist()):
            at[who == p] = ends[p][rows[who == p]]
        out[s] = (who, at)
    return out


def lookup(pointers: Pointers, stories: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the windows of shard rows (``stories`` (n,) object, ``rows`` (n,) int) are cut under the control:
    (partner story (n,) object, partner end_sample (n,) int64)."""
    names, ends = np.empty(len(rows), dtype=object), np.empty(len(rows), dtype=np.int64)
    for s in dict.fromkeys(stories.tolist()):
        at = np.flatnonzero(stories == s)
        names[at], ends[at] = pointers[s][0][rows[at]], pointers[s][1][rows[at]]
    return names, ends
