"""The downstream job end to end on a tiny random-init wav2vec2 and two LoRA checkpoints of it (replicate seeds of
one group): the espeak-ng suite, clip features, probes, word-pair preference; tables, figures, MLflow; bad input
refused before any work."""
import json
import shutil

import mlflow
import numpy as np
import pytest
import torch

from braintune_dist.config import ConfigError, from_dict, to_dict
from braintune_dist.errors import UserError
from braintune_dist.jobs.downstream import DownstreamConfig, label_of, run
from braintune_dist.model.config import HeadSettings, LoraSettings, ModelConfig
from braintune_dist.model.tuner import BrainTuner
from braintune_dist.train.checkpoint import mark_complete, save_model

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (./run installs it)")

# 4 speakers: 2 train, 1 validation, 1 test
SUITE = dict(voices=["en-us", "en-gb+f2", "en-us+m3", "en-gb+m2"], validation_speakers=1, test_speakers=1,
             speeds=[150, 190], pitches=[50], command_words=["yes", "no", "stop"], command_takes=2, phoneme_sentences=3,
             meaning_sentences=8, sentence_type_items=2)


def _checkpoint(path, seed: int):
    """A LoRA checkpoint of the tiny wav2vec2 with perturbed adapters, its fit config naming target and seed."""
    m, lora, head = ModelConfig(), LoraSettings(rank=4), HeadSettings()
    tuner = BrainTuner(m, lora, head, n_vertices=8)
    torch.manual_seed(seed)
    for name, p in tuner.named_parameters():
        if "lora_B" in name:                       # zero at init: perturb so the tuned features differ
            torch.nn.init.normal_(p, std=0.5)
    fit = dict(model=to_dict(m), lora=to_dict(lora), head=to_dict(head), target={"kind": "brain"},
               train={"seed": seed})
    save_model(path, tuner, dict(config=fit, n_vertices=8, participants=["sim01"], epoch=0, step=1))
    mark_complete(path)
    return str(path)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    base = tmp_path_factory.mktemp("downstream")
    cks = [_checkpoint(base / f"ck{s}", s) for s in (0, 1)]
    cfg = from_dict(DownstreamConfig, {
        "checkpoints": cks, "out_dir": str(base / "out"),
        "downstream": {"suite": {"out": str(base / "suite"), **SUITE}, "features": {"layers": [1, 2]},
                       "probe": {"seeds": [0, 1], "lrs": [0.01], "weight_decays": [0.0], "max_epochs": 20},
                       "preference": {"voices": ["en-us"], "out": str(base / "words"), "n_boot": 200},
                       "compute": {"runner": "local"}},
        "tracking": {"uri": f"sqlite:///{base / 'mlflow.db'}", "experiment": "downstream-test"}})
    lines = []
    return cfg, run(cfg, log=lines.append), lines, base


def test_labels_come_from_each_checkpoints_target_and_seed(job):
    cfg, report, _, _ = job
    assert [label_of(ck) for ck in cfg.checkpoints] == ["brain-tuned-s0", "brain-tuned-s1"]
    assert {r["model"] for r in report.layers} == {"untuned", "brain-tuned-s0", "brain-tuned-s1"}


def test_headline_per_task_over_layers_and_seeds(job):
    _, report, lines, base = job
    rows = {(r["model"], r["task"], r["metric"]): r for r in report.summary}
    assert {t for _, t, _ in rows} == {"commands", "phonemes", "meaning", "sentence_type"}
    tuned = rows[("brain-tuned", "commands", "f1_macro")]
    assert tuned["n_seeds"] == 2 and tuned["se_over"] == "seeds" and tuned["test"] == "t-test over seeds"
    assert tuned["layers"] == "mean(1,2)"
    untuned = rows[("untuned", "commands", "f1_macro")]
    assert untuned["se_over"] == "probe seeds" and np.isnan(untuned["diff"])
    assert np.isclose(tuned["diff"], tuned["mean"] - untuned["mean"])
    assert all(0 <= r["mean"] <= 1 and 0 <= r["naive"] <= 1 for r in report.summary)
    # per layer: two layers × two probe seeds per (model, task)
    assert {(r["layer"], r["n_probe_seeds"]) for r in report.layers} == {(1, 2), (2, 2)}
    assert any(line.startswith("[downstream] headline") for line in lines)
    for name in ("downstream_summary.csv", "downstream_layers.csv", "downstream_levels.csv",
                 "downstream_summary.png", "downstream_per_layer.png", "preference_layers.csv",
                 "preference_summary.csv", "preference_vs_untuned.csv", "preference_per_layer.png"):
        assert (base / "out" / name).stat().st_size > 100, name


def test_word_preference_rows_and_no_transcription_for_wav2vec2(job):
    _, report, lines, _ = job
    assert report.asr == [] and any("transcription check skipped" in line for line in lines)
    layers = {(r["model"], r["layer"]) for r in report.preference}
    assert layers == {(m, lay) for m in ("untuned", "brain-tuned-s0", "brain-tuned-s1") for lay in (1, 2)}
    assert all(r["ci_low"] <= r["d"] <= r["ci_high"] and r["n_targets"] > 100 for r in report.preference)


def test_mlflow_run_holds_tables_figures_and_metrics(job):
    cfg, _, _, _ = job
    client = mlflow.tracking.MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name("downstream-test")
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.status == "FINISHED" and r.data.tags["job"] == "downstream"
    assert "probe.brain-tuned.meaning.f1_macro" in r.data.metrics
    names = {a.path for a in client.list_artifacts(r.info.run_id, "downstream")}
    assert {"downstream/downstream_summary.png", "downstream/preference_per_layer.png"} <= names


def test_bad_input_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="labels: 1 names for 2 checkpoints"):
        from_dict(DownstreamConfig, {"checkpoints": ["a", "b"], "labels": ["x"]})
    with pytest.raises(ConfigError, match="probe.seeds: .* repeats a seed"):
        from_dict(DownstreamConfig, {"downstream": {"probe": {"seeds": [1, 1]}}})
    cfg = from_dict(DownstreamConfig, {"checkpoints": [str(tmp_path / "missing")], "out_dir": str(tmp_path / "o"),
                                       "downstream": {"suite": {"out": str(tmp_path / "s")},
                                                      "datasets": [{"kind": "crema_d", "root": str(tmp_path / "no")}],
                                                      "features": {"layers": [9]}}})
    with pytest.raises(UserError) as err:
        run(cfg, log=lambda *a: None)
    text = str(err.value)
    assert "missing" in text and "datasets[0].root" in text
    assert not (tmp_path / "s").exists() and not (tmp_path / "o").exists()


def test_a_bad_dataset_file_is_one_error_line_through_the_driver(tmp_path, capsys):
    """A CREMA-D file with an unknown emotion code: exit status 2, one `error:` line naming the file, no run."""
    import runpy
    from pathlib import Path

    import soundfile as sf

    from braintune_dist.experiment.launch import run_main
    audio = tmp_path / "crema" / "AudioWAV"
    audio.mkdir(parents=True)
    for name in ("1001_DFA_ANG_XX", "1002_DFA_SAD_XX", "1003_IEO_XYZ_HI"):
        sf.write(audio / f"{name}.wav", np.zeros(1600, np.float32), 16_000)
    main = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "downstream.py"), run_name="d")["main"]
    rc = run_main(main, ["--downstream.synthetic", "false", "--downstream.preference.enabled", "false",
                         "--downstream.datasets", json.dumps([{"kind": "crema_d", "root": str(tmp_path / "crema")}]),
                         "--out_dir", str(tmp_path / "out"), "--tracking.uri", f"sqlite:///{tmp_path / 'm.db'}",
                         "--downstream.compute.runner", "local"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error: ") == 1 and "Traceback" not in err, err[-2000:]
    assert "1003_IEO_XYZ_HI.wav" in err and "XYZ" in err
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "out").exists()
