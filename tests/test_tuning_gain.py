"""Brain-tuning and its shuffled-fMRI control at small size, end to end through the main job.

Simulated dataset (known ground truth) → shards → phone pretraining of the tiny wav2vec2 → multi-participant
brain-tuning on a real local Ray (2 workers, DDP) → alignment of the participant never tuned on; then the same
fit on block-permuted responses of the same stimuli (the papers' random-brain control). Both reports lead with
the papers' headline: r / noise ceiling averaged over voxels, layers and held-out participants.
"""
import csv

import pytest

from braintune_dist.config import from_dict, load_yaml, to_dict
from braintune_dist.evaluate.summary import at_layers
from braintune_dist.jobs.multi_brain import MultiBrainConfig, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned(ray_local, tmp_path_factory):
    """The tiny preset end to end, once: simulate, shard, pretrain on phones, brain-tune on sim01-03, evaluate sim04."""
    tmp_path = tmp_path_factory.mktemp("tuning_gain")
    d = to_dict(load_yaml(MultiBrainConfig, "jobs/configs/multi_brain/tiny_wav2vec2.yaml"))
    d["fit"]["data"]["root"] = str(tmp_path / "sim")
    d["fit"]["shards"] = str(tmp_path / "shards")
    d["prepare"]["sim"].update(stories=6)                  # smaller than the demo (8 stories)
    d["fit"]["data"]["val_stories"] = ["story06"]
    d["pretrain"].update(out=str(tmp_path / "pretrained"), steps=200, batch_size=16)   # val phone accuracy 0.75
    d["fit"]["engine"]["kind"] = "ddp"                            # no DeepSpeed JIT build: the claim is about tuning
    d["fit"]["train"].update(epochs=4)
    d["fit"]["ray"].update(storage_path=str(tmp_path / "ray"), run_name="tuned")
    d["fit"]["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    d["eval"].update(out_dir=str(tmp_path / "reports"), efficiency_stories=[], features=dict(
        d["eval"]["features"], stride=2.0, pool="stride", cache_dir=str(tmp_path / "cache")),   # one window per TR
        # in this process and no surface figures: the actor pool is tested in test_evaluate_cluster.py, the
        # figures in test_alignment.py
        compute={"runner": "local"}, maps=dict(d["eval"]["maps"], figures=False))
    lines = []
    cfg = from_dict(MultiBrainConfig, d)
    out = run(cfg, log=lines.append)
    # the control: the same fit on block-permuted responses of the same stimuli (data, shards, pretraining and
    # the untuned features are reused)
    d["fit"]["target"] = {"kind": "shuffled", "shuffle": "chunks", "chunk_trs": 5, "min_distance": 3}
    d["fit"]["ray"]["run_name"] = "shuffled"
    d["eval"]["out_dir"] = str(tmp_path / "reports_shuffled")
    control = run(from_dict(MultiBrainConfig, d), log=lines.append)
    return dict(cfg=cfg, d=d, out=out, control=control, text="\n".join(lines), tmp=tmp_path)


def test_brain_tuning_against_its_shuffled_control(tuned):
    """The control trains through the same path on permuted targets: it cannot predict its own (permuted)
    validation responses, brain-tuning can; the headline (layer-averaged) table leads both reports."""
    out, control, text = tuned["out"], tuned["control"], tuned["text"]
    assert "[pretrain] wrote" in text and "shuffled-tuned: " in text and "brain-tuned: " in text, text[-3000:]
    assert out["plan"].participants == ("sim01", "sim02", "sim03")
    assert {r["subject"] for r in out["rows"]} == {"sim04"}                 # held out: never tuned on
    assert {r["model"] for r in control["rows"]} == {"untuned", "shuffled-tuned"}
    # validation r of each fit's head on its own validation targets (story06, real or permuted)
    brain_r, control_r = out["result"].metrics["val_r"], control["result"].metrics["val_r"]
    assert brain_r > 0.1 and abs(control_r) < 0.05, (brain_r, control_r)
    with open(tuned["tmp"] / "reports" / "tuned_summary.csv") as f:
        table = {(r["model"], r["region"]): r for r in csv.DictReader(f)}
    assert table[("brain-tuned", "semantic")]["layers"] == "mean(1,2)"
    brain, shuffled = at_layers(out["rows"]), at_layers(control["rows"])
    assert brain["untuned/semantic"] == pytest.approx(shuffled["untuned/semantic"], abs=1e-9)   # one untuned model
    for model, head in (("brain-tuned", brain), ("shuffled-tuned", shuffled)):
        assert abs(head[f"{model}/null"] - head["untuned/null"]) < 0.05                       # nothing planted there
    # Measured (train.seed 122, one seed each; r / ceiling over layers 1-2): val_r 0.151 brain, -0.023 control.
    # Headline semantic: untuned 0.160, brain-tuned 0.167, shuffled-tuned 0.165; all voxels 0.309 / 0.310 / 0.311;
    # auditory 0.494 / 0.485 / 0.489. At this size brain-tuning is not told apart from its control on any region,
    # so no brain-over-control margin is asserted here: that needs a scale where seeds separate them.
