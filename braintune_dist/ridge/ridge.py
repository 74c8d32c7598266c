"""Voxel-wise ridge regression, one alpha per voxel chosen by cross-validation (himalaya-compatible).

All voxels and alphas share one float64 eigendecomposition per split, G_k = X_trᵀX_tr = V Λ Vᵀ;
the eigen-coefficients C = Vᵀ X_trᵀY_tr (p, v_batch) are float32 GEMMs. The validation error of
alpha comes from predictions (X_val V) diag(1 / (Λ + alpha)) C (direct form, one float32 GEMM
per alpha) or, when cheaper, from the pole form of :mod:`.pole` (one (p, p) x (p, v_batch)
product for all alphas, in float32 blocks that keep the error of a direct evaluation). Best alpha
per voxel = argmax of -mean MSE + 1e-10 log(alpha) (ties -> larger alpha, as himalaya), then
w_j = (XᵀX + alpha_j I)⁻¹ Xᵀy_j on all rows, by one float64 Cholesky factor per chosen alpha.
With p > n_train the same code runs on the kernel X_tr X_trᵀ, refit by its eigendecomposition
(identical result, since (XᵀX + aI)⁻¹Xᵀ = Xᵀ(XXᵀ + aI)⁻¹). For K-fold, XᵀY and XᵀX are sums of the per-fold blocks.
When the validation sets partition the rows and no intercept is fitted (leave one story out, K-fold), one
decomposition of all rows gives every split's validation error instead (:mod:`.blocks`, ``block_cv``).
Nothing of shape (n_alphas, n_samples, n_voxels) is formed; voxels go in ``n_targets_batch``.
"""
from __future__ import annotations

import contextlib
import numbers

import numpy as np

from braintune_dist.ridge import blocks, pole
from braintune_dist.ridge.backend import get_backend
from braintune_dist.ridge.checks import Split, check_alphas, check_X, check_Y, make_splits
from braintune_dist.ridge.state import Eigen, Fold, GramRefit
from braintune_dist.ridge.correlation import correlation_score


class RidgeCV:
    """Ridge regression with one regularisation per target chosen by cross-validation.

    For every target (voxel) j, ``w_j = argmin ||X w - y_j||² + alpha_j ||w||²`` with alpha_j the
    value of ``alphas`` of lowest mean validation MSE over the splits of ``cv``, refit on all rows.

    Alpha convention: himalaya's / scikit-learn's, alpha is added to the eigenvalues of XᵀX,
    ``w = (XᵀX + alpha I)⁻¹ Xᵀ y``. Huth-lab ``bootstrap_ridge`` uses ``S / (S² + a²)`` on the
    singular values S of X: its ``a`` is ``alpha = a²`` here (pass ``huth_alphas ** 2``).

    Parameters
    ----------
    alphas : array of shape (n_alphas,)
        Positive, finite regularisation values, default ``np.logspace(0, 6, 10)``.
    cv : int, splitter or iterable of (train_idx, test_idx)
        int K >= 2: K contiguous folds, no shuffling (scikit-learn ``KFold(K)``); an object with
        ``split(X)``; or index pairs (e.g. leave one story out).
    fit_intercept : bool
        False (default): X and Y are assumed centred. True: each split (and the refit) centres on
        its own training rows, as himalaya does.
    backend : {"auto", "numpy", "cupy"} or Backend
        ``"auto"`` uses the GPU when one is usable.
    n_targets_batch : int or None
        Voxels processed at once (memory bound). None: 4096 on NumPy, 16384 on CuPy.
    host_pool : bool
        NumPy backend: keep freed large blocks in glibc's heap during the fit (faster, but it changes
        malloc for the whole process: see :mod:`.hostpool`). For processes that only fit ridges.
    block_cv : {"auto", True, False}
        When the validation sets partition the rows (leave one story out, K-fold) and no intercept is fitted,
        the CV errors can come from one decomposition of all rows (:mod:`.blocks`), the same numbers as one
        decomposition per split: "auto" (default) where that is cheaper (many short blocks), True wherever it
        applies, False never.

    Attributes
    ----------
    best_alphas_ : ndarray of shape (n_targets,)
        Chosen alpha per target (values of ``alphas``, float64).
    coef_ : ndarray of shape (n_features, n_targets) or (n_features,) for 1-D Y
        Refit weights (NumPy, copied from the device on first access).
    cv_scores_ : ndarray of shape (n_alphas, n_targets)
        Mean over splits of the validation score ``-MSE`` (higher is better), float64.
    intercept_ : ndarray of shape (n_targets,)
        Zeros unless ``fit_intercept``.
    n_features_in_ : int
    """

    def __init__(self, alphas=np.logspace(0, 6, 10), cv=5, fit_intercept=False, backend="auto",
                 n_targets_batch=None, host_pool=False, block_cv="auto"):
        self.alphas, self.cv, self.fit_intercept = alphas, cv, fit_intercept
        self.backend, self.n_targets_batch, self.host_pool = backend, n_targets_batch, host_pool
        self.block_cv = block_cv

    def fit(self, X, Y):
        """Fit the model.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            NumPy or CuPy; float32 keeps float32 for the large products (else float64).
        Y : array of shape (n_samples, n_targets) or (n_samples,) (one target)
            May stay on the host with the CuPy backend (moved one voxel batch at a time).

        Returns
        -------
        self

        Notes
        -----
        With ``host_pool=True`` a CPU fit runs inside :func:`.hostpool.host_pool` (glibc reuses the
        memory of its large temporaries instead of mapping fresh pages; process-wide, hence opt-in).
        A CuPy fit always uses CuPy's memory pool.
        """
        be = get_backend(self.backend)
        pool = be.pool() if self.host_pool or be.name != "numpy" else contextlib.nullcontext()
        with pool:                      # large temporaries reuse memory (see .hostpool)
            return self._fit(be, X, Y)

    def _fit(self, be, X, Y):
        xp = be.xp
        X, dt = check_X(be, X, "X")
        Y, self._ravel = check_Y(Y, X.shape[0])
        alphas = check_alphas(self.alphas)
        vb = self.n_targets_batch
        vb = (16384 if be.name == "cupy" else 4096) if vb is None else vb
        if not isinstance(vb, numbers.Integral) or isinstance(vb, bool) or vb < 1:
            raise ValueError(f"n_targets_batch must be a positive int or None, got {vb!r}")
        splits, partition = make_splits(self.cv, X.shape[0])
        al = be.asarray(alphas)
        sizes = [s.nv for s in splits]
        if blocks.usable(partition, bool(self.fit_intercept), len(alphas), sizes, X.shape[1], Y.shape[1], self.block_cv):
            st = blocks.prepare(be, X, splits, dt, al)          # one decomposition for every split
            refit = st.refit

            def fit_batch(Yb):
                mse, C = blocks.mse(be, st, Yb)
                idx = _choose(be, mse, al)
                return mse, idx, blocks.refit_kernel(be, st, C, al[idx]) if st.kernel else X.T @ Yb, 0
        else:
            folds, refit = _prepare(be, X, splits, partition, bool(self.fit_intercept), dt, al)

            def fit_batch(Yb):
                return _fit_batch(be, X, Yb, folds, partition, refit, al, dt)
        p, v = X.shape[1], Y.shape[1]
        coef, intercept = xp.empty((p, v), dt), xp.zeros(v, xp.float64)
        cv_scores, best = np.empty((len(alphas), v)), np.empty(v, np.int64)
        for b0 in range(0, v, vb):                             # voxel batches
            b = slice(b0, min(v, b0 + vb))
            mse, idx, coef[:, b], intercept[b] = fit_batch(_batch(be, Y, b, dt))
            cv_scores[:, b], best[b] = -be.to_numpy(mse), be.to_numpy(idx)
        if not refit.kernel:
            _solve_refit(be, refit, coef, intercept, best, al, vb)
        self.best_alphas_, self.cv_scores_ = alphas[best], cv_scores
        self._coef, self._coef_np, self._intercept = coef, None, intercept.astype(dt)
        self.n_features_in_, self._be = p, be
        return self

    @property
    def coef_(self):
        if self._coef_np is None:                    # device -> host once, on first access
            self._coef_np = self._be.to_numpy(self._coef[:, 0] if self._ravel else self._coef)
        return self._coef_np

    @property
    def intercept_(self):
        return self._be.to_numpy(self._intercept[0] if self._ravel else self._intercept)

    def predict(self, X):
        """Predictions ``X @ coef_ + intercept_``.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        Y_pred : array of shape (n_samples, n_targets) or (n_samples,), on the fit's backend.
        """
        if not hasattr(self, "_coef"):
            raise ValueError("This RidgeCV is not fitted yet: call fit(X, Y) first")
        be = self._be
        X, _ = check_X(be, X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but the model was fit with {self.n_features_in_}")
        pred = X.astype(self._coef.dtype, copy=False) @ self._coef + self._intercept
        return pred[:, 0] if self._ravel else pred

    def score(self, X, Y):
        """Pearson r per target between ``Y`` and ``predict(X)`` (constant target -> 0).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
        Y : array of shape (n_samples, n_targets) or (n_samples,)

        Returns
        -------
        r : ndarray of shape (n_targets,) (float for a 1-D fit), float64, on the host.
        """
        pred = self.predict(X)
        Y = self._be.asarray(Y)
        if Y.shape != pred.shape:
            raise ValueError(f"Y has shape {Y.shape}, expected {pred.shape}")
        return self._be.to_numpy(correlation_score(Y, pred, backend=self._be))


# ---------------------------------------------------------------------- linear algebra
def _prepare(be, X, splits, partition, icpt, dt, al) -> tuple[list[Fold], Eigen | GramRefit]:
    """Decompose every split and all rows, in float64: the folds and the refit.

    Feature space when p <= n_train (complement splits: G - X_valᵀX_val; K-fold: G = Σ blocks),
    else sample space (kernel).
    """
    xp = be.xp
    X64 = X.astype(xp.float64)
    n, p = X.shape
    xsum = X64.sum(0) if icpt else None
    folds = [Fold(s, feat=p <= s.ntr) for s in splits]
    val_terms = {}                                             # fold → (X_valᵀX_val (p, p), X_val column sums)
    for k, f in enumerate(folds):
        if f.feat and f.split.comp:                            # (p, p) syrk per fold
            xv = X64[f.split.val]
            val_terms[k] = be.gram(xv), xv.sum(0)
    G = None                                                   # XᵀX (feature-space refit)
    if p <= n:
        G = (sum(g for g, _ in val_terms.values()) if partition and all(f.feat for f in folds)
             else be.gram(X64))
    for k, f in enumerate(folds):
        s, Gtr, mu = f.split, None, None                      # Gtr None: kernel
        if k in val_terms:
            Gv, xvsum = val_terms.pop(k)                       # freed as it is used
            Gtr, mu = G - Gv, ((xsum - xvsum) / s.ntr) if icpt else None
        else:
            xt = X64[s.tr]
            Gtr, mu = (be.gram(xt) if f.feat else None), (xt.mean(0) if icpt else None)
        f.eig = _decompose(be, X64, s, Gtr, mu, dt, al)
    mu = X64.mean(0) if icpt else None
    if G is not None:                                          # refit: Cholesky per chosen alpha
        return folds, GramRefit(G=G if mu is None else G - n * xp.outer(mu, mu), mu=mu)
    return folds, _decompose(be, X64, Split(tr=slice(0, n), val=None, ntr=n, nv=0, comp=False), None, mu, dt, al)


def _fit_batch(be, X, Yb, folds, partition, refit, al, dt):
    """CV errors of every alpha and choice for one voxel batch Yb (n, vb): returns mean validation
    MSE (n_alphas, vb) float64, alpha index (vb,), then for the refit either the weights (p, vb)
    (kernel) or the centred XᵀY_b (p, vb) to solve (:func:`_solve_refit`), and mean(Y_b) (vb,)."""
    xp = be.xp
    n = X.shape[0]
    icpt = refit.mu is not None
    ysum = Yb.sum(0, dtype=xp.float64) if icpt else None
    XtY, blocks = _cross(be, X, Yb, folds, partition, refit.kernel)
    mse = xp.zeros((al.shape[0], Yb.shape[1]), xp.float64)
    for k, f in enumerate(folds):
        s = f.split
        yv, muy, B = Yb[s.val], None, None
        if icpt:                                               # centre on the split's train rows
            muy = ((ysum - yv.sum(0, dtype=xp.float64)) / s.ntr if s.comp
                   else Yb[s.tr].mean(0, dtype=xp.float64))
            yv = (yv - muy).astype(dt)
        if f.feat:
            B = XtY - blocks[k] if s.comp else X[s.tr].T @ Yb[s.tr]
        mse += _fold_sse(be, f.eig, _coefs(be, f.eig, B, Yb, muy, dt), yv) / s.nv
    mse /= len(folds)
    idx = _choose(be, mse, al)
    muy = ysum / n if icpt else None
    if not refit.kernel:                                     # centred XᵀY, solved once all are in
        B = XtY if muy is None else XtY - (n * xp.outer(refit.mu, muy)).astype(dt)
        return mse, idx, B, (muy if icpt else 0)
    C = _coefs(be, refit, XtY, Yb, muy, dt)
    be.alpha_scale(C, refit.lam, al[idx], out=C)             # per-voxel (lam + alpha_j)⁻¹
    W = refit.W @ C                                          # (p, m) @ (m, vb)
    return mse, idx, W, ((muy - refit.mu @ W.astype(xp.float64)) if icpt else 0)


def _choose(be, mse, al):
    """Index of the best alpha per voxel: lowest mean validation MSE, ties -> larger alpha (as himalaya)."""
    return be.xp.argmax((be.xp.log(al) * 1e-10)[:, None] - mse, axis=0)


def _solve_refit(be, refit: GramRefit, coef, intercept, best, al, vb):
    """Feature-space refit on all rows: ``coef`` (p, v) holds the centred XᵀY on entry, the
    weights (G + alpha_j I)⁻¹ Xᵀy_j on return; ``intercept`` (v,) holds mean(Y) on entry.

    One float64 Cholesky factor per chosen alpha (p³/3 each, vs 9 p³ for an eigendecomposition),
    columns solved in batches of ``vb``; an eigendecomposition only if a factor fails (G + alpha I
    not numerically positive definite, e.g. tiny alpha on singular G).
    """
    xp = be.xp
    G, p, eig = refit.G, refit.G.shape[0], None
    d = xp.arange(p)
    for k in np.unique(best):
        Ga = G.copy()
        Ga[d, d] += al[k]
        L = be.cholesky(Ga)
        if L is None and eig is None:
            lam, V = be.eigh(G)
            eig = xp.maximum(lam, 0.0), V
        cols = np.flatnonzero(best == k)
        for c0 in range(0, cols.size, vb):
            c = be.asarray(cols[c0:c0 + vb])
            B = coef[:, c].astype(xp.float64, order="F")    # LAPACK layout, no copy in the solve
            if L is not None:
                W = be.cho_solve(L, B)
            else:
                W = eig[1] @ ((eig[1].T @ B) / (eig[0] + al[k])[:, None])
            coef[:, c] = W.astype(coef.dtype)
    if refit.mu is not None:
        for b0 in range(0, coef.shape[1], vb):
            b = slice(b0, b0 + vb)
            intercept[b] -= (refit.mu @ coef[:, b].astype(xp.float64)).astype(intercept.dtype)


def _decompose(be, X64, s: Split, Gtr, mu, dt, alphas) -> Eigen:
    """Eigendecomposition of a split's training Gram ``Gtr`` (feature space) or, with ``Gtr`` None, of its
    kernel (sample space); ``s.val`` None: the kernel refit on all rows (see :class:`Eigen`)."""
    xp = be.xp
    kernel = Gtr is None
    if kernel:                                       # sample space: X_tr X_trᵀ (n_tr, n_tr)
        xt = X64[s.tr] if mu is None else X64[s.tr] - mu
        lam, Q = be.eigh(be.gram(xt.T), overwrite=True)
    else:                                            # feature space: G_tr (p, p)
        lam, Q = be.eigh(Gtr - s.ntr * xp.outer(mu, mu) if mu is not None else Gtr,
                         overwrite=True)            # a fold's G_tr is its own copy
    lam = xp.maximum(lam, 0.0)                       # round-off negatives (himalaya: zeros)
    f = Eigen(kernel=kernel, lam=lam, mu=mu, basis=Q.astype(dt), tr=s.tr, ntr=s.ntr)
    if s.val is None:                                # kernel refit on all rows
        f.W = (xt.T @ Q).astype(dt)
        return f
    xv = X64[s.val] if mu is None else X64[s.val] - mu
    M = xv @ xt.T if kernel else xv                  # (n_val, p or n_tr) before rotation
    m, nv, na = lam.shape[0], xv.shape[0], alphas.shape[0]
    pole_cost, direct_cost = pole.cost(be, m, nv, na)
    A64 = M @ Q if pole_cost < direct_cost else None  # (n_val, m) validation design, eigenbasis
    P = pole.setup(be, lam, A64, alphas, dt) if A64 is not None else None
    if P is not None:
        f.pole, f.A = P, A64.astype(dt, copy=False)
    else:
        f.A = M.astype(dt) @ f.basis if dt == np.float32 else M @ Q
        f.F = (1.0 / (lam[None, :] + alphas[:, None])).astype(dt)
    return f


def _coefs(be, f: Eigen, B, Yb, muy, dt):
    """Eigen-coefficients C (m, vb): Vᵀ X_trᵀY_tr (feature) or Uᵀ Y_tr (kernel), centred."""
    if f.kernel:
        yt = Yb[f.tr]
        return f.basis.T @ ((yt - muy).astype(dt) if muy is not None else yt)
    if muy is not None:                              # Σ (x - mu_x)(y - mu_y)ᵀ over n_tr rows
        B = B - (f.ntr * be.xp.outer(f.mu, muy)).astype(dt)
    return f.basis.T @ B


def _fold_sse(be, f: Eigen, C, yv):
    """Validation sum of squared errors of every alpha, (n_alphas, vb) float64.

    Pole form (:mod:`.pole`): one product K @ C shared by all alphas, in float32 blocks.
    Direct form: predictions ``A (e_a * C)`` (n_val, vb) for one alpha at a time.
    """
    xp = be.xp
    if f.pole is not None:
        y2 = xp.square(yv.astype(xp.float64)).sum(0)
        return pole.sse(be, f.pole, C, f.A.T @ yv, y2)
    na = f.F.shape[0]
    sse = xp.zeros((na, C.shape[1]), xp.float64)
    Z = xp.empty_like(C)                             # (m, vb) coefficients of one alpha
    P = xp.empty((yv.shape[0], C.shape[1]), C.dtype)
    for a in range(na):
        xp.multiply(C, f.F[a][:, None], out=Z)
        xp.matmul(f.A, Z, out=P)
        be.sse_columns(P, yv, sse[a])
    return sse


def _cross(be, X, Yb, folds, partition, kernel_refit):
    """XᵀY_b (p, vb) and X_valᵀY_val blocks of feature-space complement splits (K-fold: XᵀY = Σ)."""
    blocks = [None] * len(folds)
    if any(f.feat and f.split.comp for f in folds) or (partition and not kernel_refit):
        blocks = [X[f.split.val].T @ Yb[f.split.val] for f in folds]
    if partition and blocks[0] is not None:
        XtY = sum(blocks[1:], blocks[0])
    else:
        XtY = None if kernel_refit and not any(f.feat for f in folds) else X.T @ Yb
    return XtY, blocks


def _batch(be, Y, b, dt):
    """Voxel batch of Y as a contiguous (n, vb) array on the backend, checked finite."""
    Yb = be.xp.ascontiguousarray(be.asarray(Y[:, b]), dtype=dt)   # host Y: moved batch by batch
    if not bool(be.xp.isfinite(Yb).all()):
        raise ValueError(f"Y contains NaN or Inf (in targets {b.start}..{b.stop - 1})")
    return Yb
