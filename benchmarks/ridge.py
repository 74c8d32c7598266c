#!/usr/bin/env python
"""Benchmark braintune_dist RidgeCV against himalaya's RidgeCV on the shared ridge tiers.

CPU (default): tiers S (p 768, v 2,000) and M (p 3072, v 8,000), n_train 9000, n_test 300,
10 alphas logspace(0, 6, 10), 5 contiguous folds (the tiers of benchmarks/anchor/ridge_anchor.py). Ours and
himalaya's numpy backend run interleaved, each repetition in its own subprocess (peak RSS is per
method), on the same synthetic data (``make_data`` of ridge_anchor.py). Reported: min / all times,
speedup, peak RSS, max |Δr| and alpha agreement against himalaya, and achieved GFLOP/s as a
fraction of the machine's float32 GEMM rate measured by roofline.py in the same run.

GPU: ``--tier L --backend cupy`` fits 12 layers (p 3072, v 80,000, same Y, one X per layer) with
the CuPy backend, then himalaya's ``torch_cuda`` and ``cupy`` backends (when importable) on
``--himalaya-layers`` layers; their 12-layer time is extrapolated per layer and labelled so.

    python benchmarks/ridge.py                              # tiers S and M, CPU
    python benchmarks/ridge.py --tier L --backend cupy      # GPU
Results are merged into benchmarks/results/ridge.json (one entry per tier and backend).
"""
import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIERS = {"S": (768, 2000), "M": (3072, 8000), "L": (3072, 80000)}


def rss_gb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def ours_flops(n, p, v, na, k, n_test, n_refit_alphas, f64_cost=2.0, leaf=128):
    """FLOPs of RidgeCV's feature-space path (K-fold, p <= n_train), split by precision.

    Returns dict(f32=..., f64=..., n_eigh=k, total=f32 + f64 + k * 9 p^3 nominal eigh).
    Per fold: Gram of the validation rows (syrk), one eigendecomposition of G_tr, C = VᵀB and
    R = AᵀY_val in float32, then either the pole form (A = X_val V and H = AᵀA in float64, the
    off-diagonal tree blocks of K @ C in float32, LEAF-sized diagonal blocks in float64) or the
    direct form (one float32 GEMM per alpha), whichever pole.cost finds cheaper. The refit
    factors G + alpha I (Cholesky, p^3 / 3) once per distinct chosen alpha and solves in float64.
    """
    nv = n / k
    leaf = min(leaf, p)
    pole = p * p + f64_cost * leaf * p + nv * p < na * nv * p     # = pole.cost(...)
    f32 = 2 * n * p * v + k * (2 * p * p * v + 2 * nv * p * v) + 2 * n_test * p * v
    f64 = k * nv * p * p                                            # fold Grams (syrk)
    if pole:
        levels = max(0, int(np.ceil(np.log2(p / leaf))))
        f64 += k * (2 * nv * p * p + nv * p * p + 2 * leaf * p * v)  # A, H, diagonal blocks
        f32 += k * (2 * p * (p - leaf) * v + 2 * na * 2 * p * v + levels * 2 * na * p * v)
    else:
        f32 += k * (2 * nv * p * p + na * 2 * nv * p * v)
    f64 += n_refit_alphas * p ** 3 / 3 + 2 * p * p * v                   # Cholesky + solves
    return dict(f32=f32, f64=f64, n_eigh=k, total=f32 + f64 + k * 9 * p ** 3)


# --------------------------------------------------------------------------- one CPU run
def worker(a):
    """Load the data, warm up, time one fit + predict + r, save r and alphas, print JSON."""
    sys.path.insert(0, a.bench_dir)
    d = np.load(a.data)
    Xtr, Ytr, Xte, Yte = (d[k] for k in ("Xtr", "Ytr", "Xte", "Yte"))
    alphas = np.logspace(0, 6, a.n_alphas)
    if a.worker == "himalaya_numpy":
        from ridge_anchor import ridge_cv_himalaya

        def fit(X, Y, Xt):
            pred, best, _ = ridge_cv_himalaya(X, Y, Xt, alphas, a.folds, "numpy")
            return pred, best
    else:
        from braintune_dist.ridge import RidgeCV

        def fit(X, Y, Xt):
            m = RidgeCV(alphas=alphas, cv=a.folds, backend="numpy", host_pool=True).fit(X, Y)
            return m.predict(Xt), m.best_alphas_
    from braintune_dist.ridge import correlation_score
    fit(np.ascontiguousarray(Xtr[:600, :64]), np.ascontiguousarray(Ytr[:600, :32]),
        np.ascontiguousarray(Xte[:, :64]))                        # library warm-up
    rss0 = rss_gb()
    t0 = time.perf_counter()
    pred, best = fit(Xtr, Ytr, Xte)
    r = correlation_score(Yte, pred)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    np.save(a.save + "_r.npy", r)
    np.save(a.save + "_alpha.npy", np.asarray(best, np.float64))
    print(json.dumps(dict(seconds=dt, peak_rss_gb=peak, extra_rss_gb=peak - rss0)), flush=True)


def roofline(bench_dir):
    """Machine rates measured now by roofline.py: best float32/float64 numpy GEMM GFLOP/s and
    float64 eigh seconds per p."""
    out = subprocess.run([sys.executable, os.path.join(bench_dir, "roofline.py")],
                         capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    rate = lambda dt: max(r["gflops"] for r in rows
                          if r.get("lib") == "numpy" and r.get("dtype") == dt and "gflops" in r)
    eigh = {r["p"]: r["s_min"] for r in rows
            if r.get("lib") == "numpy" and r.get("op") == "eigh" and r["dtype"] == "float64"}
    return dict(gemm_f32=rate("float32"), gemm_f64=rate("float64"), eigh_f64_s=eigh)


def cpu_tier(a, tier, roof, tmp):
    sys.path.insert(0, a.bench_dir)
    from ridge_anchor import make_data
    p, v = TIERS[tier]
    Xtr, Ytr, Xte, Yte, _ = make_data(a.n_train, a.n_test, p, v, np.float32, seed=0)
    path = os.path.join(tmp, f"{tier}.npz")
    np.savez(path, Xtr=Xtr, Ytr=Ytr, Xte=Xte, Yte=Yte)
    del Xtr, Ytr, Xte, Yte
    methods = ["ours_numpy", "himalaya_numpy"]
    runs = {m: [] for m in methods}
    for rep in range(a.reps):                                     # interleaved repetitions
        for m in (methods if rep % 2 == 0 else methods[::-1]):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", m, "--data", path,
                   "--save", os.path.join(tmp, f"{tier}_{m}_{rep}"), "--bench-dir", a.bench_dir,
                   "--folds", str(a.folds), "--n-alphas", str(a.n_alphas)]
            res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                            cwd=REPO).stdout.strip().splitlines()[-1])
            runs[m].append(res)
            print(f"[{tier}] rep {rep} {m}: {res['seconds']:.2f} s, peak {res['peak_rss_gb']:.2f} GB",
                  flush=True)
    load = lambda m, what: np.load(os.path.join(tmp, f"{tier}_{m}_0_{what}.npy"))
    r0, r1 = load("ours_numpy", "r"), load("himalaya_numpy", "r")
    same = np.isclose(load("ours_numpy", "alpha"), load("himalaya_numpy", "alpha"), rtol=1e-4)
    t = {m: min(x["seconds"] for x in runs[m]) for m in methods}
    fl = ours_flops(a.n_train, p, v, a.n_alphas, a.folds, a.n_test,
                    np.unique(load("ours_numpy", "alpha")).size)
    # time the machine needs for our GEMM FLOPs at its measured rates, plus its eigh time
    floor = (fl["f32"] / roof["gemm_f32"] + fl["f64"] / roof["gemm_f64"]) / 1e9 + \
        fl["n_eigh"] * roof["eigh_f64_s"].get(p, float("nan"))
    return dict(
        tier=tier, backend="numpy", device="cpu", p=p, v=v, n_train=a.n_train, n_test=a.n_test,
        n_alphas=a.n_alphas, folds=a.folds, dtype="float32", reps=a.reps,
        ours_s=round(t["ours_numpy"], 3), himalaya_numpy_s=round(t["himalaya_numpy"], 3),
        speedup_vs_himalaya_numpy=round(t["himalaya_numpy"] / t["ours_numpy"], 2),
        times_s={m: [round(x["seconds"], 3) for x in runs[m]] for m in methods},
        peak_rss_gb={m: round(max(x["peak_rss_gb"] for x in runs[m]), 3) for m in methods},
        extra_rss_gb={m: round(max(x["extra_rss_gb"] for x in runs[m]), 3) for m in methods},
        max_abs_dr_all=float(np.abs(r0 - r1).max()),
        max_abs_dr_same_alpha=float(np.abs(r0 - r1)[same].max()) if same.any() else None,
        alpha_agreement=float(same.mean()), mean_r_ours=float(r0.mean()),
        gflop_f32=round(fl["f32"] / 1e9, 1), gflop_f64=round(fl["f64"] / 1e9, 1),
        model_gflop_eigh_9p3=round(fl["total"] / 1e9, 1),
        achieved_gflops=round(fl["total"] / t["ours_numpy"] / 1e9, 1), roofline=roof,
        frac_of_gemm_rate_f32=round(fl["total"] / t["ours_numpy"] / 1e9 / roof["gemm_f32"], 3),
        roofline_floor_s=round(floor, 2), frac_of_roofline=round(floor / t["ours_numpy"], 3),
        load_avg=os.getloadavg())


# --------------------------------------------------------------------------- GPU tier L
def gpu_tier(a):
    import cupy as cp
    sys.path.insert(0, a.bench_dir)
    from ridge_anchor import make_data
    from braintune_dist.ridge import RidgeCV
    p, v = TIERS["L"]
    alphas = np.logspace(0, 6, a.n_alphas)
    t0 = time.perf_counter()
    Xtr, Ytr, Xte, Yte, _ = make_data(a.n_train, a.n_test, p, v, np.float32, seed=0)
    layers = [(Xtr, Xte)] + [make_data(a.n_train, a.n_test, p, 1, np.float32, seed=s)[0:3:2]
                             for s in range(1, a.layers)]
    print(f"data {time.perf_counter() - t0:.1f} s", flush=True)
    Yd, Ytd = cp.asarray(Ytr), cp.asarray(Yte)
    sync = cp.cuda.Device().synchronize

    def ours(X, Xt, Y=Yd, Yt=Ytd):
        m = RidgeCV(alphas=alphas, cv=a.folds, backend="cupy").fit(X, Y)
        return m.score(Xt, Yt), m.best_alphas_

    ours(Xtr[:600, :64], Xte[:, :64], Yd[:600, :32], Ytd[:, :32])  # compile kernels, cuBLAS init
    times, res = [], None
    for rep in range(a.reps):
        sync()
        t = time.perf_counter()
        out = [ours(X, Xt) for X, Xt in layers]
        sync()
        times.append(time.perf_counter() - t)
        res = res or out
        print(f"[L] ours rep {rep}: {times[-1]:.2f} s for {len(layers)} layers", flush=True)
    pool = cp.get_default_memory_pool()
    entry = dict(tier="L", backend="cupy", device=cp.cuda.runtime.getDeviceProperties(0)["name"]
                 .decode(), p=p, v=v, layers=len(layers), n_train=a.n_train, n_alphas=a.n_alphas,
                 folds=a.folds, dtype="float32", reps=a.reps, ours_s=round(min(times), 3),
                 ours_times_s=[round(t, 3) for t in times],
                 ours_gpu_pool_gb=round(pool.total_bytes() / 1e9, 2),
                 tf32_cupy=os.environ.get("CUPY_TF32", "0") == "1", mean_r_ours=float(np.mean(res[0][0])))
    fl = ours_flops(a.n_train, p, v, a.n_alphas, a.folds, a.n_test,
                    np.unique(res[0][1]).size, f64_cost=1.0)
    entry["achieved_tflops"] = round((fl["f32"] + fl["f64"]) * len(layers) / min(times) / 1e12, 1)
    del Yd
    pool.free_all_blocks()
    for name in ("torch_cuda", "cupy"):
        try:
            entry.update(_himalaya_gpu(name, layers[:a.himalaya_layers], Ytr, Yte, alphas, a,
                                       res, len(layers)))
        except ImportError as e:
            entry[f"himalaya_{name}"] = f"unavailable: {e}"
        pool.free_all_blocks()
    return entry


def _himalaya_gpu(name, layers, Ytr, Yte, alphas, a, res, n_layers):
    import warnings
    import sklearn
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HRidgeCV
    from braintune_dist.ridge import correlation_score
    sklearn.set_config(assume_finite=True)
    be = set_backend(name, on_error="raise")
    Yd = be.asarray(Ytr)
    out = {}
    if name == "torch_cuda":
        import torch
        out["tf32_torch"] = dict(allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
                                 float32_matmul_precision=torch.get_float32_matmul_precision())
        sync = torch.cuda.synchronize
    else:
        import cupy as cp
        sync = cp.cuda.Device().synchronize

    def fit(X, Y, Xt):
        m = HRidgeCV(alphas=alphas.astype(np.float32), cv=a.folds,
                     solver_params=dict(n_targets_batch=a.himalaya_batch,
                                        n_targets_batch_refit=a.himalaya_batch))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(be.asarray(X), Y)
            return be.to_numpy(m.predict(be.asarray(Xt))), be.to_numpy(m.best_alphas_)

    fit(layers[0][0][:600, :64], be.asarray(Ytr[:600, :32]), layers[0][1][:, :64])   # warm-up
    t, dr, agree = 0.0, [], []
    for i, (X, Xt) in enumerate(layers):
        sync()
        t0 = time.perf_counter()
        pred, best = fit(X, Yd, Xt)
        sync()
        t += time.perf_counter() - t0
        r = np.asarray(correlation_score(Yte, pred))
        same = np.isclose(res[i][1], best, rtol=1e-4)
        dr.append(float(np.abs(res[i][0] - r)[same].max()))
        agree.append(float(same.mean()))
        print(f"[L] himalaya {name} layer {i}: {time.perf_counter() - t0:.2f} s", flush=True)
    per_layer = t / len(layers)
    return {**out, f"himalaya_{name}_layers_run": len(layers),
            f"himalaya_{name}_s_per_layer": round(per_layer, 3),
            f"himalaya_{name}_s_{n_layers}_layers_extrapolated": round(per_layer * n_layers, 2),
            f"max_abs_dr_same_alpha_vs_{name}": max(dr), f"alpha_agreement_vs_{name}": min(agree)}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", default="SM", help="S, M, SM (CPU) or L (GPU)")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bench-dir", default=os.path.join(REPO, "benchmarks", "anchor"),
                    help="folder of ridge_anchor.py (synthetic data, himalaya runner) and roofline.py")
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "ridge.json"))
    ap.add_argument("--n-train", type=int, default=9000)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n-alphas", type=int, default=10)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--himalaya-layers", type=int, default=12)
    ap.add_argument("--himalaya-batch", type=int, default=16384)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--save", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.bench_dir = os.path.abspath(a.bench_dir)
    if a.worker:
        return worker(a)
    sys.path.insert(0, REPO)
    date = datetime.date.today().isoformat()
    entries = []
    if a.tier == "L":
        if a.backend != "cupy":
            raise SystemExit("tier L runs on the GPU: use --backend cupy")
        entries.append(gpu_tier(a))
    else:
        roof = roofline(a.bench_dir)
        print(f"roofline: {roof}", flush=True)
        with tempfile.TemporaryDirectory(prefix="ridge_bench_") as tmp:
            entries += [cpu_tier(a, t, roof, tmp) for t in a.tier]
    old = json.load(open(a.out)) if os.path.exists(a.out) else []
    keep = [e for e in old if (e["tier"], e["backend"]) not in {(x["tier"], x["backend"]) for x in entries}]
    for e in entries:
        e["date"] = date
        print(json.dumps(e))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump(keep + entries, fh, indent=1)


if __name__ == "__main__":
    main()
