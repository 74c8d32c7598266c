"""Linear probes per layer: what a representation makes linearly readable, scored once on held-out speakers.

Protocol (per model, task, layer and probe seed):

1. standardise the clip vectors with the training split's mean and SD;
2. for every (learning rate, weight decay) of the grid, fit one ``nn.Linear`` with Adam (softmax cross-entropy,
   or a sigmoid per label for multi-hot targets), scoring the **validation** split after every epoch and keeping
   the best epoch's weights (early stop after ``patience`` epochs without a better score);
3. the grid point with the best validation score is scored **once** on the test split.

The test split is never looked at before step 3: the released probe code reported the best test score over
epochs, which picks the epoch on the test set. A seed sets the initialisation and the mini-batch order.
Each (model, task, layer) is one Ray task (all seeds and grid points), its features sent once to the object store.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braintune_dist.downstream.config import ProbeSettings
from braintune_dist.downstream.metrics import scores
from braintune_dist.downstream.tasks import Task
from braintune_dist.evaluate.compute import ComputeSettings, Runner, use_ray


@dataclass(frozen=True)
class TaskArrays:
    """What a probe needs of a task (no file names): targets and split indices."""

    name: str
    targets: np.ndarray
    """(n_clips,) int or (n_clips, n_classes) uint8."""
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    multi_label: bool
    n_classes: int

    @classmethod
    def of(cls, task: Task) -> "TaskArrays":
        return cls(task.name, np.asarray(task.targets), task.indices("train"), task.indices("validation"),
                   task.indices("test"), task.multi_label, len(task.classes))


@dataclass(frozen=True)
class ProbeResult:
    """One probe fit, scored once on the test split."""

    model: str
    task: str
    layer: int
    seed: int
    lr: float
    weight_decay: float
    epoch: int
    """Epoch kept (1-based), chosen on the validation split."""
    validation: float
    """Validation score (``select_on``) of the kept epoch."""
    accuracy: float
    f1_macro: float
    f1_micro: float


def _predict(logits, multi_label: bool) -> np.ndarray:
    return (logits > 0).to(dtype=logits.dtype).numpy().astype(np.uint8) if multi_label \
        else logits.argmax(dim=1).numpy()


def fit_probe(x: np.ndarray, t: TaskArrays, s: ProbeSettings, seed: int) -> tuple[dict, dict]:
    """One seed's probe: (chosen settings {'lr', 'weight_decay', 'epoch', 'validation'}, test scores).

    Parameters
    ----------
    x : array of shape (n_clips, hidden)  one layer's clip vectors
    """
    import torch
    mu, sd = x[t.train].mean(axis=0), x[t.train].std(axis=0)
    xs = torch.from_numpy(((x - mu) / np.maximum(sd, 1e-6)).astype(np.float32))            # (n_clips, hidden)
    y = torch.from_numpy(t.targets.astype(np.float32) if t.multi_label else t.targets.astype(np.int64))
    loss_fn = torch.nn.BCEWithLogitsLoss() if t.multi_label else torch.nn.CrossEntropyLoss()
    train = torch.from_numpy(t.train)
    bs = s.batch_size or len(train)
    best = None                                              # (validation, lr, wd, epoch, state)
    for lr in s.lrs:
        for wd in s.weight_decays:
            torch.manual_seed(seed)                          # the same init and batch order for every grid point
            order = torch.Generator().manual_seed(seed)
            probe = torch.nn.Linear(xs.shape[1], t.n_classes)
            opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=wd)
            top, since = None, 0
            for epoch in range(1, s.max_epochs + 1):
                perm = train[torch.randperm(len(train), generator=order)]
                for b in range(0, len(perm), bs):
                    idx = perm[b:b + bs]
                    opt.zero_grad()
                    loss_fn(probe(xs[idx]), y[idx]).backward()
                    opt.step()
                with torch.no_grad():
                    pred = _predict(probe(xs[t.validation]), t.multi_label)
                v = scores(t.targets[t.validation], pred, t.multi_label, t.n_classes)[s.select_on]
                if top is None or v > top[0]:
                    top, since = (v, epoch, {k: p.detach().clone() for k, p in probe.state_dict().items()}), 0
                else:
                    since += 1
                    if since >= s.patience:
                        break
            if best is None or top[0] > best[0]:
                best = (top[0], lr, wd, top[1], top[2])
    v, lr, wd, epoch, state = best
    probe = torch.nn.Linear(xs.shape[1], t.n_classes)
    probe.load_state_dict(state)
    with torch.no_grad():
        pred = _predict(probe(xs[t.test]), t.multi_label)
    return dict(lr=lr, weight_decay=wd, epoch=epoch, validation=float(v)), \
        scores(t.targets[t.test], pred, t.multi_label, t.n_classes)


def probe_layer(feats: np.ndarray, pos: int, layer: int, model: str, t: TaskArrays,
                s: ProbeSettings) -> list[ProbeResult]:
    """Every probe seed on one layer (one Ray task). ``feats``: (n_clips, n_layers, hidden); ``pos`` indexes it."""
    import torch
    torch.set_num_threads(1)                 # many small tasks side by side; one thread each is fastest
    x = np.ascontiguousarray(feats[:, pos], dtype=np.float32)
    out = []
    for seed in s.seeds:
        chosen, sc = fit_probe(x, t, s, seed)
        out.append(ProbeResult(model, t.name, layer, seed, chosen["lr"], chosen["weight_decay"], chosen["epoch"],
                               chosen["validation"], sc["accuracy"], sc["f1_macro"], sc["f1_micro"]))
    return out


def run_probes(feats: dict[str, dict[str, np.ndarray]], tasks: list[TaskArrays], layers: dict[str, list[int]],
               s: ProbeSettings, compute: ComputeSettings, log=print) -> list[ProbeResult]:
    """Probe every (model, task, layer) as Ray tasks (or here, with ``compute.runner: local``).

    Parameters
    ----------
    feats : model label → task name → (n_clips, n_layers, hidden)  (``clip_features``)
    tasks : the tasks' targets and splits (``TaskArrays.of(task)``)
    layers : model label → the hidden_states index of each position of axis 1
    """
    runner = Runner(use_ray(compute), num_cpus=1.0)
    arrays = {t.name: t for t in tasks}
    handles = []
    for model, per_task in feats.items():
        for name, x in per_task.items():
            ref = runner.put(x)                              # once per (model, task): every layer's task reads it
            handles += [runner.submit(probe_layer, ref, pos, layer, model, arrays[name], s)
                        for pos, layer in enumerate(layers[model])]
    log(f"[downstream] {len(handles)} probe fits (model × task × layer, {len(s.seeds)} seeds and "
        f"{len(s.lrs) * len(s.weight_decays)} grid points each)")

    def progress(done: int, total: int, sec: float):
        if done == total or done % max(1, total // 5) == 0:
            log(f"[downstream] probes {done}/{total} in {sec:.0f} s")

    return [r for rows in runner.gather(handles, progress) for r in rows]
