"""Shared fixtures: one local Ray for the session (loopback only) and a tiny hand-made ds003020 dataset."""
from __future__ import annotations

import json
import os

# before Ray is imported anywhere: keep every Ray socket on 127.0.0.1, no usage stats
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_DISABLE_USAGE_STATS"] = "1"
# Ray Train's controller polls its workers (and collects their reports) every 2 s by default: a fit's end is seen
# up to 2 s late, and the suite runs a few dozen fits
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# two helpers every fit starts and nothing on a loopback test cluster reads: the watcher of cloud nodes being
# drained (spot preemption) and the Prometheus metrics; ~2 s less per fit (the drivers started here inherit it)
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")

import numpy as np
import pytest

SR = 16_000
# tiny dataset: story → TR count (respdict); rows after the [10:-5] trim = n_trs - 20
TINY_STORIES = {"alpha": 30, "bravo": 26, "charlie": 28, "delta": 27, "wheretheressmoke": 62}
TINY_PARTICIPANTS = {"UTS01": 30, "UTS02": 40, "UTS03": 25}          # subject → n_voxels
TINY_MISSING = {("UTS02", "charlie"), ("UTS03", "delta")}        # (subject, story) not heard
TINY_SHORT_AUDIO = {"delta": 14.0}                               # story → seconds cut off the audio end
N_VERTICES = 20


def response_code(participant: str, story: str) -> float:
    """Base value of a (subject, story) response block: row r, voxel v hold code + r + 0.001 v."""
    return 1000.0 * list(TINY_PARTICIPANTS).index(participant) + 100.0 * list(TINY_STORIES).index(story)


def tiny_responses(participant: str, story: str, n_rows: int) -> np.ndarray:
    """(n_rows, n_voxels) float32 responses that name their subject, story and row."""
    n_vox = TINY_PARTICIPANTS[participant]
    return (response_code(participant, story) + np.arange(n_rows)[:, None]
            + 0.001 * np.arange(n_vox)[None, :]).astype(np.float32)


def tiny_map(participant: str) -> np.ndarray:
    """(n_voxels,) int64 vertex of each voxel; a few unmapped (-1); UTS03 misses some vertices."""
    i, n = list(TINY_PARTICIPANTS).index(participant), TINY_PARTICIPANTS[participant]
    m = (np.arange(n) * (3 if i == 2 else 1) + i) % (17 if i == 2 else N_VERTICES)
    m[::7] = -1
    return m.astype(np.int64)


def make_tiny_dataset(root, audio_scale: float = 1.0) -> None:
    """Write the ds003020 layout under ``root``; audio sample i holds (i + 1) · audio_scale (a ramp marker)."""
    import h5py
    import soundfile as sf
    deriv = root / "derivative"
    (deriv / "preprocessed_data").mkdir(parents=True)
    (root / "stimuli").mkdir()
    (deriv / "respdict.json").write_text(json.dumps(TINY_STORIES))
    for story, n_trs in TINY_STORIES.items():
        seconds = (n_trs - 5) * 2.0 - 10.0 - TINY_SHORT_AUDIO.get(story, 0.0)   # the TR grid's audio span
        wav = np.arange(1, int(seconds * SR) + 1, dtype=np.float32) * np.float32(audio_scale)
        sf.write(root / "stimuli" / f"{story}.wav", wav, SR, subtype="FLOAT")
    for sub in TINY_PARTICIPANTS:
        d = deriv / "preprocessed_data" / sub
        d.mkdir()
        for story, n_trs in TINY_STORIES.items():
            if (sub, story) in TINY_MISSING:
                continue
            Y = tiny_responses(sub, story, n_trs - 20)
            with h5py.File(d / f"{story}.hf5", "w") as f:
                f["data"] = Y
                if story == "wheretheressmoke":
                    f["individual_repeats"] = np.stack([Y, Y + 0.5, Y - 0.5])
    gt = root / "ground_truth"
    gt.mkdir()
    np.savez(gt / "common_space.npz", vertex_region=np.arange(N_VERTICES) % 2,
             region_names=np.array(["null", "auditory"]))
    for sub in TINY_PARTICIPANTS:
        (gt / sub).mkdir()
        np.save(gt / sub / "voxel_to_vertex.npy", tiny_map(sub))


# The test files that take longest, longest first (measured on 2 cores, 2026-12): `./run tests` runs the suite on
# two pytest-xdist workers, one file at a time each, and starting the longest files first keeps one worker from
# ending alone on a long file while the other sits idle (longest-processing-time-first scheduling).
LONGEST_FIRST = ["test_tuning_gain.py", "test_sweep.py", "test_train_ray.py", "test_deepspeed_driver.py", "test_compare.py",
                 "test_evaluate_cluster.py", "test_job_submit.py", "test_scaling.py", "test_object_store.py",
                 "test_analysis.py", "test_alignment.py", "test_signals.py", "test_untrusted.py", "test_teacher.py",
                 "test_preflight.py", "test_config.py", "test_stream.py", "test_whisper.py", "test_downstream_features.py",
                 "test_ui.py", "test_downstream_job.py", "test_downstream_probe.py", "test_trials.py"]


def pytest_collection_modifyitems(config, items):
    """Longest files first, the others after them in their usual order (a stable sort keeps each file's own order)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_lebel")
    make_tiny_dataset(root)
    return root


@pytest.fixture(scope="session")
def ray_local():
    """A 2-CPU local Ray for the whole session, quiet Ray Data progress bars; its dashboard serves the state API
    that Ray Train's placement-group cleaner needs (see ``experiment.launch.connect_ray``)."""
    import ray
    import ray.data
    # address="local": never join another `ray start` cluster on this machine (/tmp/ray/ray_current_cluster)
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
             configure_logging=False, ignore_reinit_error=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def sim_shards(tmp_path_factory):
    """A simulated dataset (3 participants × 3 stories, story03 for validation) and its shards, for small fits."""
    from braintune_dist.data.lebel import DataConfig
    from braintune_dist.data.shards import ShardConfig, write_shards
    from braintune_dist.data.simulate import SimConfig, simulate
    root = tmp_path_factory.mktemp("sim") / "ds"
    simulate(SimConfig(participants=3, stories=3, trs_per_story=36, n_vertices=60, seed=3), str(root))
    data = DataConfig(root=str(root), val_stories=["story03"])
    out = tmp_path_factory.mktemp("shards") / "shards"
    write_shards(ShardConfig(window=4.0, audio_dtype="float16"), data, str(out))
    return data, out


@pytest.fixture(scope="module")
def ray_address(ray_local) -> str:
    """The session Ray's address: a job driver started by a test with RAY_ADDRESS set joins it (as under
    ``ray job submit``) instead of starting and stopping a Ray of its own (~8 s). Looked up per module: the
    multi-node test restarts the session's Ray, on another port."""
    return ray_local.get_runtime_context().gcs_address
