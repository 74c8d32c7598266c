"""What a fit predicts: the participants' fMRI responses, or a control target built from them.

The control (``kind='shuffled'``) is a model tuned on block-permuted fMRI of the same stimuli: whatever it
gains over the untuned model comes from tuning itself, not from brain data (``targets/shuffled.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jsonargparse.typing import NonNegativeInt, PositiveInt


@dataclass
class TargetSettings:
    """The fit's target: brain responses or a control target."""

    kind: Literal["brain", "shuffled"] = "brain"
    """'brain': the participants' responses to each window; 'shuffled': the control, the same responses
    paired with the audio of other rows (a block permutation, fixed for the fit and drawn from its seed)."""
    shuffle: Literal["chunks", "story"] = "chunks"
    """Control permutation (kind='shuffled'). 'chunks': within each story, blocks of chunk_trs rows trade places
    with blocks at least min_distance blocks away; 'story': each story's responses are paired with another
    story's audio, row by row."""
    chunk_trs: PositiveInt = 15
    """Rows (TRs) per block of the 'chunks' permutation; every story needs at least two blocks."""
    min_distance: NonNegativeInt = 10
    """Blocks a block moves at least in the 'chunks' permutation (a story too short for it gets the farthest
    moves its length allows: half its blocks)."""
