"""The demo's claim at small size: brain-tuning raises held-out-participant semantic alignment; the
category of what is heard is decodable from the tuned features (the tuning's own effect on that probe is noise).

Simulated dataset (known ground truth) → shards → phone pretraining of the tiny wav2vec2 → multi-participant
brain-tuning on a real local Ray (2 workers, DDP) → alignment of the participant never tuned on, untuned
vs brain-tuned, at each model's best layer. The semantic vertices read each word's place in a semantic
space (category, subcategory, word), which phones alone do not give: only tuning on other people's
semantic responses can put it in the features.
Then the layer-wise probes (a known answer): a linear probe of the word category being heard,
fit on the training stories and scored on the two stories the tuning never took a gradient from.
"""
import csv

import pytest

from braintune_dist.analysis.probes import ProbeSettings, compare_probes, probe_layers
from braintune_dist.model.backbone import ModelConfig
from braintune_dist.config import from_dict, load_yaml, to_dict
from braintune_dist.data.lebel import LebelDataset
from braintune_dist.evaluate.report import headline
from braintune_dist.features.extract import FeatureConfig, FeatureExtractor
from braintune_dist.jobs.multi_brain import MultiBrainConfig, run
from braintune_dist.train.checkpoint import load_backbone

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
    return dict(cfg=cfg, d=d, out=out, text="\n".join(lines), tmp=tmp_path)


def test_tuning_raises_held_out_alignment(tuned):
    out, text = tuned["out"], tuned["text"]
    assert "[pretrain] wrote" in text and "brain-tuned/semantic" in text, text[-2000:]
    assert out["plan"]["participants"] == ["sim01", "sim02", "sim03"]
    assert {r["subject"] for r in out["rows"]} == {"sim04"}                 # held out: never tuned on
    head = headline(out["rows"])
    with open(tuned["tmp"] / "reports" / "tuned_gain.csv") as f:
        gain = {r["region"]: r for r in csv.DictReader(f)}
    # each model at its best layer, paired over sim04's voxels: the 95 % bootstrap CI of the gain excludes 0.
    # Measured (r / ceiling) for training seeds 122 / 7 / 1: all +0.008 [0.005, 0.012] / +0.015 [0.010, 0.019] /
    # +0.012 [0.008, 0.017]; semantic +0.013 [0.007, 0.020] / +0.034 [0.025, 0.043] / +0.032 [0.023, 0.040];
    # null -0.016 in each (31 voxels, CI [-0.03, -0.00])
    for region in ("all", "semantic"):
        g = gain[region]
        assert float(g["ci_low"]) > 0 and float(g["p"]) < 0.01, (region, g, text[-3000:])
        assert head[f"brain-tuned/{region}"] > head[f"untuned/{region}"]
    assert abs(float(gain["null"]["diff"])) < 0.05                           # nothing planted there: no gain


def test_tuned_features_carry_the_category_heard(tuned):
    """Layer-wise probes (a known answer): a linear probe of the word category being heard, fit on the training
    stories and scored on the two stories the tuning never took a gradient from."""
    cfg, tmp_path = tuned["cfg"], tuned["tmp"]
    # the tuning window (2 s) ending every 0.2 s; held out = the validation and test stories
    ds = LebelDataset(cfg.fit.data.root, cfg.fit.data)
    fc = FeatureConfig(window=2.0, stride=0.2, cache_dir=str(tmp_path / "probe_cache"))
    base = ModelConfig(pretrained=tuned["d"]["pretrain"]["out"])
    ps = ProbeSettings(targets=["category", "word"], sample_every=0.2, block_seconds=10.0)
    held = ["story06", ds.cfg.test_story]
    results = [r for label, ck in (("tuned", tuned["out"]["checkpoint"]), ("untuned", None))
               for r in probe_layers(ds, FeatureExtractor(load_backbone(base, ck), fc), ds.split()["train"], ps,
                                     label, test_stories=held)]
    rows = compare_probes(results, "untuned")
    tuned_layers = [r["layer"] for r in rows if r["target"] == "category" and r["layer"] != 0]   # 0: CNN, no LoRA
    gain = {t: sum(r["diff"] for r in rows if r["target"] == t and r["layer"] in tuned_layers) / len(tuned_layers)
            for t in ("category", "word")}
    # measured, mean over the LoRA layers: category +0.004 / +0.006 (training seeds 122 / 7, stage simulator),
    # -0.005 and a pass in two suite runs on the surface simulator, -0.002 with this pretraining (seed 122); word
    # identity -0.002 to +0.004. At this size the tuning's effect on the category probe is within run-to-run noise,
    # so only the probes' level is asserted: the category being heard is decodable well above chance (1/8) from the
    # tuned model's last layer (measured 0.27 on seed 122 with this pretraining; 0.22 when sampled every 0.4 s, too
    # close to the bound), and tuning did not cost word identity more than noise.
    last = max(tuned_layers)
    cat = next(r for r in rows if r["target"] == "category" and r["layer"] == last)
    assert cat["mean_a"] > 0.2, (cat, rows)
    assert gain["word"] > -0.02, (gain, rows)
