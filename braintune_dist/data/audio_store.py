"""Story audio stored once beside the shards, and the one function that cuts training windows from it.

With 10 s windows at a 2 s TR, shards that hold each window's samples store every second of audio five
times, and a 16-bit PCM source stored as float32 takes twice its bytes again. In the ``story`` store
(``ShardConfig.audio_store``) a shard row holds only where its window ends (``end_sample``) and the
reader cuts the window from the story's waveform, which is read once per job and shared through Ray's
object store. Layout (``<shards>/``)::

    audio/<story>.npy     (n_samples,) int16 | float16 | float32: one file per story, checksummed in the manifest

``int16`` stores PCM samples exactly: the reader decodes ``q / 32768``, which is what soundfile returns for a
16-bit file, so the windows are bit-identical to windows cut from the float32 waveform. ``auto`` picks int16
when every story is 16-bit PCM, mono, at 16 kHz (lossless there) and float32 otherwise.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from braintune_dist.errors import DatasetError

AUDIO_DIR = "audio"
PCM_SCALE = 32768.0           # soundfile's float32 view of 16-bit PCM is q / 32768
LOSSLESS_INT16 = ("PCM_16", "PCM_S8", "PCM_U8")


def resolve_dtype(requested: str, ds, stories: list[str]) -> str:
    """The stored dtype: ``requested``, or for ``auto`` int16 when every story's file is 16-bit (or 8-bit)
    PCM, mono, at 16 kHz (then int16 loses nothing), else float32."""
    if requested != "auto":
        return requested
    import soundfile as sf
    from braintune_dist.data.lebel import SAMPLE_RATE
    for story in stories:
        info = sf.info(str(ds.audio_path(story)))
        if info.subtype not in LOSSLESS_INT16 or info.samplerate != SAMPLE_RATE or info.channels != 1:
            return "float32"
    return "int16"


def encode(wav: np.ndarray, dtype: str, path: Path) -> np.ndarray:
    """(n_samples,) float32 waveform → stored samples of ``dtype``; refuses values the dtype cannot hold."""
    peak = float(np.abs(wav).max()) if len(wav) else 0.0
    if dtype == "int16":
        if peak > 1.0:
            raise DatasetError(f"{path}: samples up to {peak:.3g} are outside 16-bit PCM's [-1, 1); use "
                               "shard.audio_dtype float32")
        return np.clip(np.round(wav * PCM_SCALE), -32768, 32767).astype(np.int16)
    if dtype == "float16" and peak > float(np.finfo(np.float16).max):
        raise DatasetError(f"{path}: samples up to {peak:.3g} overflow float16 (max 65504); use audio_dtype float32")
    return wav.astype(dtype)


def decode(samples: np.ndarray) -> np.ndarray:
    """Stored samples (any shape) → float32 waveform values (int16 is scaled by 1/32768; floats are cast)."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / np.float32(PCM_SCALE)
    return samples.astype(np.float32, copy=False)


def cut_windows(wav: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """Windows of ``n`` samples ending (exclusive) at sample ``ends``, zero-padded outside the audio.

    Parameters
    ----------
    wav : (n_samples,) array of any dtype
    ends : (n_windows,) int
    n : int  window length in samples

    Returns
    -------
    windows : (n_windows, n) array of ``wav``'s dtype
    """
    out = np.zeros((len(ends), n), dtype=wav.dtype)
    for i, end in enumerate(ends):
        start = end - n
        lo, hi = max(start, 0), min(end, len(wav))
        if hi > lo:
            out[i, lo - start:hi - start] = wav[lo:hi]
    return out


def story_file(story: str) -> str:
    return f"{AUDIO_DIR}/{story}.npy"


def to_npy(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, samples, allow_pickle=False)
    return buf.getvalue()


def from_npy(data: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise DatasetError(f"{where}: not a .npy audio file ({exc}); rewrite the shards") from None
