"""One replicate seed, many independent random streams.

A fit's seed (``fit.train.seed``) drives everything stochastic in it: the training stream's order, the LoRA
and head initialisation, dropout and a control target's permutation. Each purpose draws from its own stream,
derived here, so that changing how one of them consumes random numbers leaves the others unchanged, and two
purposes never share a stream by accident (``seed`` for one and ``seed + 1`` for another would collide with the
next replicate's).
"""
from __future__ import annotations

import zlib

import numpy as np


def derive(seed: int, purpose: str, *keys: int) -> int:
    """A 31-bit seed for ``purpose`` (e.g. ``'lora'``, ``'dropout'``) of replicate ``seed``, with optional integer
    ``keys`` (a worker's rank); the same arguments always give the same value, any change gives an unrelated one."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(purpose.encode()), *map(int, keys)])
    return int(ss.generate_state(1)[0] >> 1)


def rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """A NumPy generator on the stream :func:`derive` names."""
    return np.random.default_rng(derive(seed, purpose, *keys))
