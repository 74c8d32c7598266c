"""BENCHMARKS.md's tables, generated from benchmarks/results/*.json (the prose around them is written by hand).

Each generated table sits between ``<!-- table: NAME -->`` and ``<!-- /table -->`` in BENCHMARKS.md; NAME is a
function of TABLES below, which reads the result files and returns the Markdown rows. Run after a benchmark::

    python benchmarks/tables.py            # rewrite the tables in place (atomically)
    python benchmarks/tables.py --check    # exit 1 when a table differs from its results (what the tests run)
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "BENCHMARKS.md"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def load(name: str):
    return json.loads((RESULTS / f"{name}.json").read_text())


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: header, separator, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def epochs(seconds: list[float], fmt: str = "{:.2f}") -> str:
    return " / ".join(fmt.format(s) for s in seconds)


# --------------------------------------------------------------------------- shards.py
def shards_write() -> str:
    d = load("shards")
    w, a = d["write"], d["write_audio_dictionary"]
    return table(["Shard writing", "time", "MB/s"], [
        ["`write_shards` end to end (wav + hf5 read, windows, common space, Parquet, fsync, sha256)",
         f"{w['end_to_end_s']:.2f} s", f"{w['end_to_end_mb_s']:.0f}"],
        ["our write path alone (`write_table_atomic`: no codec, dictionaries only on strings, fsync, rename) + sha256",
         f"{w['write_path_s']:.2f} s", f"{w['write_path_mb_s']:.0f}"],
        ["plain `pq.write_table(table, path)` on the same tables (pyarrow defaults: snappy, dictionary on all "
         "columns)", f"{w['plain_write_table_s']:.2f} s", f"{w['plain_write_table_mb_s']:.0f}"],
        ["`audio_dictionary=True`, end to end", f"{a['end_to_end_s']:.2f} s",
         f"{a['end_to_end_mb_s']} ({a['shard_mb']:.0f} MB written)"]])


def shards_stream() -> str:
    d = load("shards")
    plain = d["plain_pyarrow_read"]
    rows = [["plain pyarrow `read_table` + numpy, one process, no Ray", f"{plain['rows_s']:.0f}",
             f"{plain['mb_s']:.0f}", epochs(plain["epoch_s"]) + " s"]]
    for s in d["stream"] + [dict(d["stream_audio_dictionary"], dictionary=True)]:
        what = f"{s['mode']}, `shuffle=\"{s['shuffle']}\"`"
        what += f", local buffer {s['local_buffer']}" if s["local_buffer"] else ""
        what += ", audio-dictionary shards" if s.get("dictionary") else ""
        what += f" ({s['rows']:,} rows)" if s["mode"] == "pair" else ""
        rows.append([what, f"{s['rows_s']:.0f}", f"{s['mb_s']:.0f}", epochs(s["epoch_s"]) + " s"])
    return table(["Stream (epoch 2)", "rows/s", "MB/s of tensors", "epoch 1 / 2"], rows)


# --------------------------------------------------------------------------- data_path.py, train_throughput.py
LAYOUTS = {"windows_float32": "`audio_store: windows`, float32", "windows_float16": "`audio_store: windows`, float16",
           "story_auto": "`audio_store: story`, auto → int16 (the default)"}


def data_path_bytes() -> str:
    w = load("data_path")["write"]
    return table(["layout", "on disk", "read per epoch", "per window", "vs float32 windows"], [
        [LAYOUTS[k], f"{v['disk_mb']:.1f} MB", f"{v['read_mb_per_epoch']:.1f} MB", f"{v['read_kb_per_window']:.1f} kB",
         "1×" if v["fewer_bytes_than_windows_float32"] == 1 else f"{v['fewer_bytes_than_windows_float32']}× fewer"]
        for k, v in w.items()])


def data_path_delivery() -> str:
    shuffles = {"global": "global", "blocks32": "blocks + 32-row buffer"}
    rows = []
    for key, v in load("data_path")["delivery"].items():
        layout, shuffle = key.split("/")
        rows.append([layout.replace("_auto", "").replace("_", " "), shuffles[shuffle], f"{v['rows_s']:.1f}",
                     epochs(v["epoch_s"]), epochs(v["first_batch_s"])])
    return table(["layout", "shuffle", "rows/s", "epoch (s)", "first batch (s)"], rows)


def data_path_curves() -> str:
    names = {"global": "global", "blocks32": "blocks + 32-row buffer", "none": "none (file order)"}
    rows = []
    for key, runs in load("data_path")["curves"].items():
        steady = [s for r in runs for s in r["epoch_s"][1:]]
        rows.append([names[key], " / ".join(" ".join(f"{x:.4f}" for x in r["train_loss"]) for r in runs),
                     " / ".join(f"{r['val_loss'][-1]:.4f}" for r in runs), f"{min(steady):.1f}–{max(steady):.1f}"])
    return table(["shuffle", "train loss by epoch, seed 0 / seed 1", "val loss at the last epoch", "steady epoch (s)"],
                 rows)


def train_story_vs_windows() -> str:
    rows = []
    for name, label in (("train_throughput_windows", "windows float16"), ("train_throughput_story", "story int16")):
        d = load(name)
        best, r = d["plain_best_samples_s"], d["ratios"]
        ds = d["ray_train"]["deepspeed"]
        rows.append([label, f"{best['2']} / {best['1']} samples/s",
                     f"{ds['samples_s']:.1f} samples/s, epochs {epochs(ds['epoch_s'], '{:.1f}')} s",
                     f"{r['ray_deepspeed_vs_plain_2thread']:.2f}", f"{r['ray_deepspeed_vs_plain_1thread']:.2f}",
                     f"{r['ray_data_delivery_vs_ray_deepspeed_consumption']:.1f}× "
                     f"({d['ray_data']['rows_s']} rows/s)"])
    return table(["shards", "plain 2 threads / 1 thread", "Ray Train (DeepSpeed)", "vs plain 2 thr",
                  "vs plain 1 thr", "delivery / consumption"], rows)


# --------------------------------------------------------------------------- ridge.py
def ridge() -> str:
    rows = []
    for r in sorted(load("ridge"), key=lambda r: "SML".index(r["tier"])):
        shape = f"p {r['p']} × v {r['v']:,}" + (f" × {r['layers']} layers" if r.get("layers", 1) > 1 else "")
        where = f"{r['tier']} ({'CPU' if r['device'] == 'cpu' else r['device']}), {r['date']}"
        if r["device"] == "cpu":
            rows.append([where, shape, f"{r['ours_s']:.2f} s", f"numpy {r['himalaya_numpy_s']:.1f} s",
                         f"**{r['speedup_vs_himalaya_numpy']}×**",
                         f"alphas {r['alpha_agreement']:.0%}, max abs Δr {r['max_abs_dr_all']:.1e}"])
        else:
            rows.append([where, shape, f"**{r['ours_s']:.1f} s**",
                         f"torch_cuda {r['himalaya_torch_cuda_s_12_layers_extrapolated']:.1f} s, "
                         f"cupy {r['himalaya_cupy_s_12_layers_extrapolated']:.1f} s",
                         f"**{r['speedup_vs_himalaya_torch_cuda']}×**, **{r['speedup_vs_himalaya_cupy']}×**",
                         f"cupy: {r['alpha_agreement_vs_cupy']:.0%}, {r['max_abs_dr_same_alpha_vs_cupy']:.1e}; "
                         f"torch_cuda: {r['alpha_agreement_vs_torch_cuda']:.2%}, "
                         f"{r['max_abs_dr_same_alpha_vs_torch_cuda']:.1e}"])
    return table(["tier", "shape", "ours", "himalaya", "speedup", "agreement with himalaya"], rows)


def ridge_loso() -> str:
    d = load("ridge_loso")
    shape = f"{d['stories']} stories × {d['rows']} rows, p {d['p']:,}, v {d['v']:,}, {d['dtype']}, {d['n_alphas']} alphas"
    rows = [["braintune_dist, one decomposition of all rows (`block_cv`, the default)", f"**{d['block_s']:.1f} s**",
             "1", "—"],
            ["braintune_dist, one decomposition per split (the path it replaces)", f"{d['per_split_s']:.1f} s",
             f"**{d['speedup_vs_per_split']}×** slower",
             f"alphas {d['alphas_equal_per_split']:.0%} equal, CV scores rel. Δ ≤ {d['max_rel_cv_score_diff']:.0e}, "
             f"test r Δ ≤ {d['max_abs_dr_per_split']:.0e}"]]
    if "himalaya_s" in d:
        rows.append(["himalaya `RidgeCV` (numpy), the same splits", f"{d['himalaya_s']:.1f} s",
                     f"**{d['speedup_vs_himalaya']}×** slower",
                     f"alphas {d['alphas_equal_himalaya']:.0%} equal, test r Δ ≤ {d['max_abs_dr_himalaya']:.0e}"])
    return f"{shape}; one run, {d['date']}, {d['cpus']} CPUs.\n\n" + table(
        ["leave-one-story-out fit", "wall", "vs block leave-out", "agreement with block leave-out"], rows)


def cv_choice() -> str:
    d = load("cv_choice")
    what = {"loso": "leave one story out (the default)", "folds5": "5 folds of whole stories",
            "boot3": "chunked bootstrap, 3 × 25 % in 20-TR chunks (the papers')"}
    rows = [[what[k], f"{c['seconds']:.1f} s", f"{c['same_alpha']:.0%}", f"{c['mean_abs_dr']:.4f} / {c['max_abs_dr']:.2f}",
             f"{c['mean_r_norm_change']:+.4f} (largest {c['max_abs_r_norm_change']:.4f})"] for k, c in d["choices"].items()]
    return (f"{d['stories']} training stories ({d['rows']:,} rows), {d['participants']} participants, {d['voxels']:,} "
            f"voxels, the oracle's {len(d['layers'])} stage layers; one run, {d['date']}.\n\n") + table(
        ["CV", "ridge time", "same alpha as LOSO", "test r: mean / largest abs Δ", "mean r / ceiling change"], rows)


# --------------------------------------------------------------------------- evaluate.py, ceiling.py, stride.py, whisper.py
def evaluate_pool() -> str:
    d = load("evaluate")
    rows = [["plain `FeatureExtractor.story_windows` loop, this process", f"{d['plain']['seconds']:.1f} s",
             f"{d['plain']['windows_s']:.1f}", "1", "1"]]
    rows += [[f"Ray Data pool, {p['actors']} actor{'s' * (p['actors'] > 1)} × 1 CPU", f"{p['seconds']:.1f} s",
              f"{p['windows_s']:.1f}", f"**{p['per_worker_efficiency']:.2f}**", f"{p['in_actor_efficiency']:.2f}"]
             for p in d["pool"]]
    return table(["path", "wall", "windows/s", "per-worker efficiency", "in-actor efficiency"], rows)


def evaluate_workers() -> str:
    d = load("evaluate")
    cpus = d["machine"]["cpus"]
    return table(["workers", "features", "ridge", "total"], [
        [f"{e['workers']} ({e['workers']} × {cpus / e['workers']:g}-CPU actor and ridge task at a time)",
         f"{e['features_s']:.1f} s", f"{e['ridge_s']:.1f} s", f"{e['total_s']:.1f} s"] for e in d["evaluation"]])


def ceiling() -> str:
    return table(["computation", "peak beyond the input", "time (2 cores)", "max \\|Δ cc_max\\|"], [
        [r["method"] + (f", blocks of {r['batch']:,} voxels" if r["batch"] else ""), f"{r['peak_gib']:.2f} GiB",
         f"{r['seconds']:.1f} s", f"{r['max_abs_diff']:.0e}" if r["max_abs_diff"] else "reference"]
        for r in load("ceiling")["runs"]])


def stride() -> str:
    rows = []
    for r in load("stride")["runs"]:
        b, cost = r["best_layer"], r["feature_seconds_per_audio_second"]
        rows.append([f"{r['stride']} s", r["pool"], f"{b['semantic']:.3f}", f"{b['auditory']:.3f}", f"{b['null']:.3f}",
                     "–" if cost != cost else f"{cost:.3f}"])          # NaN: not timed
    return table(["stride", "pool", "semantic", "auditory", "null", "feature s / s of audio"], rows)


def stride_stages() -> str:
    d = load("stride_stages")
    regions = ["auditory", "phonetic", "lexical", "semantic", "null", "all"]
    ref = d["reference"]
    rows = []
    for r in d["runs"]:
        b, cost = r["best_layer"], r["feature_seconds_per_audio_second"]
        is_ref = r["stride"] == ref["stride"] and r["pool"] == ref["pool"]
        worst = "reference" if is_ref else f"{min(r['delta_vs_reference'][k] for k in regions[:4]):+.3f}"
        rows.append([f"{r['stride']:g} s", r["pool"]] + [f"{b[k]:.3f}" for k in regions] +
                    ["–" if cost != cost else f"{cost:.3f}", worst,
                     "1" if is_ref else f"{r['cost_vs_reference']:.2f}"])
    return table(["stride", "pool"] + regions + ["feature s / s of audio", "lowest stage Δ vs reference",
                                                 "cost vs reference"], rows)


def _seconds(s: float) -> str:
    return f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.1f} h"


def evaluate_cost_units() -> str:
    c = load("evaluate")["cost_model"]
    u = c["units"]
    w, b, r, rr = u["window"], u["base_window"], u["rates_1_thread"], u["ridge"]
    h = c["h100_rates"]
    rows = [[f"Whisper tiny.en window ({w['window_s']:g} s, native input, every {w['stride']:g} s, `pool: {w['pool']}`), "
             f"{w['threads']} thread, batch {w['batch']}: one story's `story_windows`", f"{w['s_per_window']:.3f} s",
             "measured in this run"],
            [f"base wav2vec2 window ({PAPER_WINDOW} s), {b['threads']} threads, batch {b['batch']}",
             f"{b['s_per_window']:.2f} s", "measured in this run"],
            [f"GEMM float32 / float64, {r['threads']} thread; one float64 eigh at p = {r['eigh_m']:,}",
             f"{r['f32'] / 1e9:.0f} / {r['f64'] / 1e9:.0f} GFLOP/s; {r['eigh_s']:.2f} s", "measured in this run"],
            [f"ridge task (`fit_layer`, block leave-out, 17 alphas), {rr['stories']} stories × {rr['rows']} rows, "
             f"p {rr['p']:,}, v {rr['v']:,}, {rr['threads']} thread",
             f"{rr['seconds']:.2f} s = {rr['scale']:.2f} × its floor", "measured in this run; the ratio scales every "
             "other shape's floor (operation count at the rates above)"],
            ["H100: GEMM float32 / float64; float64 eigh at p = 3,072",
             f"{h['f32'] / 1e12:.1f} / {h['f64'] / 1e12:.1f} TFLOP/s; {h['eigh_s'] * 1000:.0f} ms",
             "measured 2026-11-23 (§ voxel-wise ridge, GPU per layer); the fit is taken at its floor (ratio 1): "
             "**derived**"],
            ["H100: responses host → device", f"{h['h2d'] / 1e9:.0f} GB/s", "**assumed**"],
            ["H100: base window", f"{c['gpu_windows_s']:.0f} windows/s",
             "**derived, not measured**: the H100 bf16 training rate × 3 × 10 / 16.1"]]
    return table(["unit cost", "value", "source"], rows)


def evaluate_cost_check() -> str:
    c = load("evaluate")["cost_model"]
    d, s = c["check"]["dataset"], c["check"]["settings"]
    size = (f"{d['participants']} participants × {d['voxels'][0]:,}–{d['voxels'][-1]:,} voxels, {d['train_stories']} "
            f"training stories ({d['train_rows']:,} rows; {d['audio_s'] / 3600:.2f} h of audio with the test story), "
            f"{s['models']} model × {s['layers']} layers: {s['windows']:,} windows, {s['fits']} ridge fits.\n\n")
    runs = c.get("earlier_checks", []) + [dict(date=c["date"], loadavg_start=c["machine"]["loadavg_start"],
                                               loadavg_end=c["machine"]["loadavg_end"], **c["check"])]
    rows = []
    for r in runs:
        p, m = r["predicted"], r["measured"]
        la = f"{r['loadavg_start'][0]:.1f} → {r['loadavg_end'][0]:.1f} (15 min: {r['loadavg_end'][2]:.1f})"
        rows.append([r["date"].replace("T", " ")[:16] + (" (this file's units)" if r is runs[-1] else ""), la,
                     f"{p['features_s']:.0f} + {p['ridge_s']:.0f} = **{p['total_s']:.0f} s**",
                     f"{m['marks']['features_start']:.0f} + {m['features_s']:.0f} + {m['ridge_s']:.0f} + "
                     f"{m['wall_s'] - m['marks']['ridge_end']:.0f} → **{m['wall_s']:.0f} s**",
                     f"{m['features_s'] / p['features_s']:.2f} / {m['ridge_s'] / p['ridge_s']:.2f} / **{r['ratio']:.2f}**"])
    return size + table(["run", "load average (1 min, start → end)", "predicted: features + ridge = total",
                         "measured: start-up + features + ridge + report → wall", "measured / predicted: features / "
                         "ridge / wall"], rows)


def evaluate_cost_full() -> str:
    c = load("evaluate")["cost_model"]
    what = {"paper": "the paper preset (`compare/paper_hubert.yaml`)", "earlier": "the earlier model's size"}
    rows = []
    for name, sc in c["full"].items():
        for key in [k for k in sc if k.endswith(("_last", "_stride"))]:
            r = sc[key]
            stride, pool = key.split("_")
            h = r["h100"]
            rows.append([f"{what[name]}: {sc['models']} models × {sc['participants']} participants × {sc['layers']} "
                         f"layers, {sc['stories']} stories", f"{stride} s, `{pool}`", f"{r['windows']:,}", f"{r['fits']:,}",
                         f"**{_seconds(h['total_s'])}** ({_seconds(h['features_s'])} + {_seconds(h['ridge_s'])})",
                         _seconds(r["cpu_1x2"]["total_s"]), _seconds(r["cpu_8x2"]["total_s"])])
    return table(["evaluation", "features", "windows", "ridge fits", "1 × H100 (features + ridge), derived",
                  "1 × 2-core CPU", "8 × 2-core CPU"], rows)


PAPER_WINDOW = 16.1


WHISPER = {"forward_8s": "forward, 8 s windows (the demo's evaluation window)",
           "forward_10s": "forward, 10 s windows (the training window)",
           "forward_16.1s": "forward, 16.1 s windows (the papers' evaluation window)",
           "train_step_10s": "LoRA train step (forward + backward + AdamW), 10 s"}


def whisper_speed() -> str:
    d = load("whisper")
    s, up, f = d["speed_seconds"], d["speedup_native"], d["alignment"]["feature_seconds_per_audio_second"]
    return table(["what", "padded", "native", "speed-up"], [
        [WHISPER.get(k, k), f"{s[k + '_padded']:.2f} s", f"{s[k + '_native']:.2f} s", f"{up[k]:.1f}×"] for k in up] + [
        ["feature seconds per second of audio (8 s every 2 s)", f"{f['padded']:.3f}", f"{f['native']:.3f}",
         f"{f['padded'] / f['native']:.1f}×"]])


# --------------------------------------------------------------------------- compare.py (one pair of tables per run)
REGIONS = ("all", "auditory", "phonetic", "lexical", "semantic", "null")


def _groups(rows: list[dict]) -> list[str]:
    names = list(dict.fromkeys(r["model"] for r in rows))
    return sorted(names, key=lambda m: (m != "untuned", m != "brain-tuned", m))


def compare_headline(stem: str) -> str:
    """Per region: each group's headline ± SE (unit) and Δ against untuned with its p; brain − each control."""
    d = load(stem)
    summ = {(r["model"], r["region"]): r for r in d["summary"]}
    groups = _groups(d["summary"])
    contrast = {(r["control"], r["region"]): r for r in d["contrast"]}
    controls = list(dict.fromkeys(r["control"] for r in d["contrast"]))

    def cell(r):
        s = f"{r['mean']:.3f} ± {r['se']:.3f}"
        return s if r["diff"] is None or r["diff"] != r["diff"] else s + f" (Δ {r['diff']:+.3f}, p {r['p']:.2g})"
    rows = []
    for reg in REGIONS:
        if ("untuned", reg) not in summ:
            continue
        rows.append([reg] + [cell(summ[(g, reg)]) for g in groups] +
                    [f"{contrast[(c, reg)]['diff']:+.3f} ± {contrast[(c, reg)]['diff_se']:.3f} (p {contrast[(c, reg)]['p']:.2g})"
                     for c in controls])
    n = {g: int(summ[(g, "all")]["n_seeds"]) for g in groups}
    unit = {g: summ[(g, "all")]["se_over"] for g in groups}
    return table(["region"] + [f"{g} ({n[g]} seed{'s' if n[g] > 1 else ''}; ± SE over {unit[g]})" for g in groups] +
                 [f"brain − {c} (Welch over seeds)" for c in controls], rows)


def compare_layers(stem: str) -> str:
    """Per region and model group: r / noise ceiling at every layer, mean (± SD) over seeds."""
    d = load(stem)
    at = {(r["model"], r["layer"], r["region"]): r for r in d["layers"]}
    layers = sorted({r["layer"] for r in d["layers"]})
    groups = _groups(d["layers"])
    rows = []
    for reg in REGIONS:
        for g in groups:
            if (g, layers[0], reg) not in at:
                continue
            rows.append([reg, g] + [f"{at[(g, lay, reg)]['mean']:.3f}" + (
                f" ± {at[(g, lay, reg)]['sd']:.3f}" if at[(g, lay, reg)]["sd"] is not None else "") for lay in layers])
    return table(["region", "model"] + [f"layer {lay}" for lay in layers], rows)


# --------------------------------------------------------------------------- downstream.py (three tables per run)
def _nan(x) -> bool:
    return x is None or x != x


def downstream_probes(stem: str) -> str:
    """Per task: test F1 macro averaged over layers, each group ± SE (unit), Δ against untuned with its p; the
    naive majority classifier and a random guess."""
    d = load(stem)
    summ = {(r["model"], r["task"]): r for r in d["summary"] if r["metric"] == "f1_macro"}
    level = {(r["task"], r["level"]): r["f1_macro"] for r in d["levels"]}
    groups = _groups([r for r in d["summary"] if r["metric"] == "f1_macro"])
    tasks = list(dict.fromkeys(r["task"] for r in d["summary"]))

    def cell(r):
        s = f"{r['mean']:.3f} ± {r['se']:.3f}"
        return s if _nan(r["diff"]) else s + f" (Δ {r['diff']:+.3f}, p {r['p']:.2g})"
    rows = [[t, f"{level[(t, 'majority')]:.3f}", f"{level[(t, 'chance')]:.3f}"] + [cell(summ[(g, t)]) for g in groups]
            for t in tasks]
    first = {g: summ[(g, tasks[0])] for g in groups}
    return table(["task", "naive majority", "random guess"] + [
        f"{g} ({int(first[g]['n_seeds'])} seed{'s' if first[g]['n_seeds'] > 1 else ''}; ± SE over "
        f"{first[g]['se_over']})" for g in groups], rows)


def downstream_asr(stem: str) -> str:
    """1 − WER of each model and seed group, Δ against untuned with its paired bootstrap CI over sentences."""
    d = load(stem)
    return table(["model", "1 − WER", "± SE over seeds", "Δ against untuned", "95% CI of Δ (sentences resampled)"], [
        [r["model"], f"{r['accuracy']:.3f}", "" if _nan(r["se"]) else f"{r['se']:.3f}",
         "" if r["model"] == "untuned" else f"{r['delta']:+.3f}",
         "" if _nan(r["ci_low"]) else f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"] for r in d["asr"]])


def downstream_preference(stem: str) -> str:
    """Per layer: d = semantic − phonetic distance of each group (mean over seeds), then the layer mean with its
    SE over seeds and the group's Δd against untuned with a paired bootstrap CI over words."""
    d = load(stem)
    per: dict = {}
    for r in d["preference_layers"]:
        per.setdefault((r["group"], r["layer"]), []).append(r["d"])
    groups = _groups([dict(model=r["group"]) for r in d["preference_layers"]])
    layers = sorted({r["layer"] for r in d["preference_layers"]})
    summ = {r["model"]: r for r in d["preference"]}
    delta = {r["model"]: r for r in d["preference_delta"] if r["layer"] == "mean"}
    rows = []
    for g in groups:
        s = summ[g]
        mean = f"{s['d_layer_mean']:+.4f}" + ("" if _nan(s["se_over_seeds"]) else f" ± {s['se_over_seeds']:.4f}")
        dd = delta.get(g)
        rows.append([g] + [f"{sum(per[(g, lay)]) / len(per[(g, lay)]):+.4f}" for lay in layers] + [
            mean, "" if dd is None else f"{dd['delta']:+.4f} [{dd['ci_low']:+.4f}, {dd['ci_high']:+.4f}]"])
    return table(["model"] + [f"layer {lay:g}" for lay in layers] + ["layer mean (± SE over seeds)",
                                                                     "Δ layer mean against untuned (95% CI, words)"],
                 rows)


# --------------------------------------------------------------------------- startup.py
def startup() -> str:
    d = load("startup")
    return table(["job", "`--help`", "torch imported", "same, training stack imported first", "ratio"], [
        [f"`{r['job']}`", f"{r['help_s']:.2f} s", "yes" if r["torch_imported"] else "no",
         f"{r['with_training_stack_s']:.2f} s", f"{r['ratio']:.1f}×"] for r in d["jobs"]])


TABLES = {f.__name__.replace("_", "-"): f for f in (
    shards_write, shards_stream, data_path_bytes, data_path_delivery, data_path_curves, train_story_vs_windows,
    ridge, ridge_loso, cv_choice, evaluate_pool, evaluate_workers, evaluate_cost_units, evaluate_cost_check,
    evaluate_cost_full, ceiling, stride, stride_stages, whisper_speed, startup)}
for _path in sorted(RESULTS.glob("compare_*.json")):
    _tag = _path.stem[len("compare_"):].replace("_", "-")
    TABLES[f"compare-{_tag}-headline"] = functools.partial(compare_headline, _path.stem)
    TABLES[f"compare-{_tag}-layers"] = functools.partial(compare_layers, _path.stem)
for _path in sorted(RESULTS.glob("downstream_*.json")):
    _tag = _path.stem[len("downstream_"):].replace("_", "-")
    for _what in ("probes", "asr", "preference"):
        TABLES[f"downstream-{_tag}-{_what}"] = functools.partial(globals()[f"downstream_{_what}"], _path.stem)


def render(text: str) -> str:
    """``text`` with every table block regenerated; an unknown NAME is an error naming it."""
    def sub(m: re.Match) -> str:
        name = m["name"]
        if name not in TABLES:
            raise SystemExit(f"error: {DOC.name}: unknown table {name!r}; known: {sorted(TABLES)}")
        return m.group(1) + TABLES[name]() + m.group(4)
    return BLOCK.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when a table is out of date")
    args = ap.parse_args(argv)
    text = DOC.read_text()
    new = render(text)
    if args.check:
        stale = [m["name"] for m, n in zip(BLOCK.finditer(text), BLOCK.finditer(new)) if m["body"] != n["body"]]
        if stale:
            print(f"{DOC.name}: tables out of date with benchmarks/results: {stale}; run python benchmarks/tables.py")
            return 1
        return 0
    if new != text:
        sys.path.insert(0, str(ROOT))
        from braintune_dist.io import write_text
        write_text(DOC, new)
    print(f"{DOC.name}: {len(list(BLOCK.finditer(new)))} tables from {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
