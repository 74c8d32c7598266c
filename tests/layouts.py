"""Tiny datasets in the real ds003020 layout, written by hand with h5py/soundfile (not the simulator)."""
import json

import h5py
import numpy as np
import soundfile as sf

from braintune_dist.data.lebel import TEST_STORY
from braintune_dist.data.textgrid import Interval, TextGrid, Tier, write_textgrid

N_TRS = {"alpha": 40, "beta": 36, TEST_STORY: 70}   # respdict values: grid has n-5 TRs, hf5 has n-20 rows
N_VOX = {"UTS01": 7, "UTS02": 5}


def build_real_layout(root, sr=16000, n_rep=3, seed=0):
    """Write a minimal dataset in the real ds003020 layout with plain h5py/soundfile calls."""
    rng = np.random.default_rng(seed)
    deriv = root / "derivative"
    (deriv / "TextGrids").mkdir(parents=True)
    (root / "stimuli").mkdir()
    (deriv / "respdict.json").write_text(json.dumps(N_TRS))
    for story, n in N_TRS.items():
        seconds = (n - 5) * 2.0 - 10.0                       # audio covers the TR grid
        sf.write(root / "stimuli" / f"{story}.wav", rng.standard_normal(int(seconds * sr)) * 0.1, sr)
        words = Tier("words", [Interval(0.0, 0.5, "hello"), Interval(0.5, 0.7, "sp"), Interval(0.7, 1.2, "world")])
        phones = Tier("phones", [Interval(0.0, 0.25, "HH"), Interval(0.25, 0.5, "AH"), Interval(0.5, 1.2, "")])
        write_textgrid(TextGrid(0.0, seconds, [phones, words]), deriv / "TextGrids" / f"{story}.TextGrid")
        for sub, v in N_VOX.items():
            d = deriv / "preprocessed_data" / sub
            d.mkdir(parents=True, exist_ok=True)
            data = rng.standard_normal((n - 20, v)).astype(np.float32)
            data[:, 0] = np.nan                               # an all-NaN voxel, as in the real files
            with h5py.File(d / f"{story}.hf5", "w") as f:
                f["data"] = data
                if story == TEST_STORY:
                    f["individual_repeats"] = rng.standard_normal((n_rep, n - 20, v)).astype(np.float32)
    return root
