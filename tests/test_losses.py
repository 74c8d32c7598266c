"""Brain losses against direct per-pair references; masking of absent participants and uncovered vertices."""
import numpy as np
import pytest
import torch

from braintune_dist.train.losses import LOSSES, brain_loss


def _data(seed=0, b=5, p=3, v=12):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(b, p, v, generator=g, dtype=torch.float64)
    tgt = torch.randn(b, p, v, generator=g, dtype=torch.float64)
    pm = torch.ones(b, p, dtype=torch.bool)
    pm[0, 2] = pm[3, 1] = False
    vm = torch.ones(p, v, dtype=torch.bool)
    vm[1, :4] = False
    return pred, tgt, pm, vm


def reference(name, pred, tgt, pm, vm):
    """Loop over valid (window, participant) pairs, numpy float64."""
    pred, tgt, pm, vm = (x.numpy() for x in (pred, tgt, pm, vm))
    if name == "temporal_corr":
        per_p = []
        for j in range(pred.shape[1]):
            rows = pm[:, j]
            if rows.sum() < 2:
                continue
            rs = [np.corrcoef(pred[rows, j, k], tgt[rows, j, k])[0, 1] for k in np.flatnonzero(vm[j])]
            per_p.append(1 - np.mean(rs))
        return np.mean(per_p)
    out = []
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            if not pm[i, j]:
                continue
            a, b = pred[i, j, vm[j]], tgt[i, j, vm[j]]
            if name == "mse":
                out.append(np.mean((a - b) ** 2))
            elif name == "spatial_corr":
                out.append(1 - np.corrcoef(a, b)[0, 1])
            elif name == "cos_huber":
                e = np.abs(a - b)
                s = np.minimum(e, 0.6)
                out.append(np.mean(0.5 * s ** 2 + 0.6 * (e - s)) + 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    return np.mean(out)


@pytest.mark.parametrize("name", LOSSES)
def test_losses_match_reference(name):
    pred, tgt, pm, vm = _data()
    got = brain_loss(name, pred, tgt, pm, vm).item()
    assert got == pytest.approx(reference(name, pred, tgt, pm, vm), rel=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_masked_entries_do_not_matter(name):
    pred, tgt, pm, vm = _data(1)
    base = brain_loss(name, pred, tgt, pm, vm)
    tgt2 = tgt.clone()
    tgt2[0, 2] += 100.0                    # participant 2 did not hear window 0
    tgt2[:, 1, :4] -= 50.0                 # vertices participant 1 does not cover
    assert brain_loss(name, pred, tgt2, pm, vm).item() == pytest.approx(base.item(), rel=1e-9)
    tgt2[1, 0, 0] += 1.0                   # a valid entry does matter
    assert brain_loss(name, pred, tgt2, pm, vm).item() != pytest.approx(base.item(), rel=1e-9)


def test_shared_head_broadcasts_and_perfect_prediction():
    pred, tgt, pm, vm = _data(2)
    shared = pred[:, 0]                                    # (batch, V) from a shared head
    assert torch.isclose(brain_loss("mse", shared, tgt, pm, vm),
                         brain_loss("mse", shared[:, None].expand_as(tgt), tgt, pm, vm))
    for name in LOSSES:
        assert brain_loss(name, tgt, tgt, pm, vm).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        brain_loss("l1", pred, tgt, pm, vm)


def test_validation_r_over_batches_equals_pearson_per_vertex():
    """Moments summed over two batches give each (participant, covered vertex)'s Pearson r over the windows the
    participant heard; the validation r is their mean (float64 numpy reference)."""
    from braintune_dist.train.losses import moments_r, pearson_moments
    pred, tgt, pm, vm = _data(b=9)
    pm[5, 0] = False
    m = pearson_moments(pred[:4], tgt[:4], pm[:4]) + pearson_moments(pred[4:], tgt[4:], pm[4:])
    ref = [np.corrcoef(pred[pm[:, i], i, j].numpy(), tgt[pm[:, i], i, j].numpy())[0, 1]
           for i in range(pm.shape[1]) for j in range(vm.shape[1]) if vm[i, j]]
    assert moments_r(m, vm) == pytest.approx(np.mean(ref), abs=1e-12)
    shared = pred[:, 0]                                                   # a shared head's (batch, V) output
    np.testing.assert_allclose(pearson_moments(shared, tgt, pm)[1, 2], (shared * pm[:, 2:3]).sum(0))
    assert np.isnan(moments_r(pearson_moments(pred[:1], tgt[:1], pm[:1]), vm))    # one window: no r
