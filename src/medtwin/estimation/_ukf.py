"""An Unscented Kalman Filter over many patients at once, as pure functions.

Every array has a leading patient axis: means (n, d), covariances (n, d, d), measurements
(n, m). `ukf_predict` and `ukf_update` take the model as functions of batched points, so one
call filters every patient; nothing is stored between calls (the state is the arguments).

Sigma points and weights follow the scaled unscented transform (Julier 2002; Wan & van der
Merwe, "The Unscented Kalman Filter for Nonlinear Estimation", 2000). Covariances are kept
symmetric and positive definite: a Cholesky factor that fails is repaired by clipping
eigenvalues, per patient, without touching the others.

The same code runs on NumPy arrays or on torch tensors (float64, on the tensors' device: a GPU
where they are on one), through `medtwin._array.array_namespace`; the model functions then
receive and must return tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin._array import array_namespace

FloatArray = npt.NDArray[np.float64]
#: Smallest eigenvalue a repaired covariance keeps (in the state's squared units).
MIN_EIGENVALUE = 1e-9
_LOG_2PI = float(np.log(2.0 * np.pi))


class UKFParams(NamedTuple):
    """Scaled unscented transform: spread `alpha`, prior knowledge `beta`, secondary `kappa`.

    alpha = 1, kappa = 0 keep every weight non-negative for the small state dimensions of
    physiological models (no negative centre weight to break positive definiteness); beta = 2
    is optimal for Gaussian priors (Wan & van der Merwe 2000).
    """

    alpha: float = 1.0
    beta: float = 2.0
    kappa: float = 0.0


class UKFUpdate(NamedTuple):
    """The filter after a measurement update, per patient.

    `innovation` (n, m) and `innovation_cov` (n, m, m) are those of the observed entries (0
    and identity where masked); `loglik` (n,) is the Gaussian log-likelihood of the observed
    entries (0 where nothing was observed).
    """

    mean: FloatArray
    cov: FloatArray
    innovation: FloatArray
    innovation_cov: FloatArray
    loglik: FloatArray


def sigma_weights(params: UKFParams, d: int) -> tuple[FloatArray, FloatArray, float]:
    """Mean weights, covariance weights (2d + 1,) and the spread factor sqrt(d + lambda)."""
    lam = params.alpha**2 * (d + params.kappa) - d
    wm = np.full(2 * d + 1, 1.0 / (2.0 * (d + lam)))
    wc = wm.copy()
    wm[0] = lam / (d + lam)
    wc[0] = lam / (d + lam) + (1.0 - params.alpha**2 + params.beta)
    return wm, wc, float(np.sqrt(d + lam))


def safe_cholesky(cov: FloatArray) -> FloatArray:
    """Lower Cholesky factors of (n, d, d) covariances, repairing any that are not positive
    definite (symmetrized, eigenvalues clipped to MIN_EIGENVALUE) instead of failing."""
    xp = array_namespace(cov)
    sym = xp.asarray(0.5 * (cov + xp.swapaxes(cov, -1, -2)), dtype=xp.float64)
    factor: FloatArray
    try:
        factor = xp.linalg.cholesky(sym)
    except xp.linalg.LinAlgError:
        values, vectors = xp.linalg.eigh(sym)
        repaired = (vectors * xp.maximum(values, MIN_EIGENVALUE)[..., None, :]) @ xp.swapaxes(
            vectors, -1, -2)
        factor = xp.linalg.cholesky(0.5 * (repaired + xp.swapaxes(repaired, -1, -2)))
    return factor


def sigma_points(params: UKFParams, mean: FloatArray, cov: FloatArray) -> FloatArray:
    """Sigma points (n, 2d + 1, d) of each patient's Gaussian."""
    xp = array_namespace(mean, cov)
    d = mean.shape[-1]
    _, _, spread = sigma_weights(params, d)
    scaled = spread * xp.swapaxes(safe_cholesky(cov), -1, -2)   # rows: columns of L
    centre = mean[:, None, :]
    points: FloatArray = xp.concatenate([centre, centre + scaled, centre - scaled], axis=1)
    return points


def _moments(xp: Any, points: FloatArray, wm: FloatArray,
             wc: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Weighted mean (n, k), deviations (n, 2d+1, k) and covariance (n, k, k) of points."""
    mean = wm @ points
    dev = points - mean[:, None, :]
    cov = (xp.swapaxes(dev, -1, -2) * wc) @ dev
    return mean, dev, cov


def ukf_predict(params: UKFParams, mean: FloatArray, cov: FloatArray,
                transition: Callable[[FloatArray], FloatArray],
                process_cov: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Propagate each patient's Gaussian through `transition` (points (n, s, d) → (n, s, d),
    inputs and parameters bound in) and add `process_cov` (n, d, d)."""
    xp = array_namespace(mean, cov)
    wm, wc, _ = sigma_weights(params, mean.shape[-1])
    moved = transition(sigma_points(params, mean, cov))
    new_mean, _, new_cov = _moments(xp, moved, xp.asarray(wm), xp.asarray(wc))
    new_cov = new_cov + xp.asarray(process_cov)
    return new_mean, 0.5 * (new_cov + xp.swapaxes(new_cov, -1, -2))


def ukf_update(params: UKFParams, mean: FloatArray, cov: FloatArray,
               observe: Callable[[FloatArray], FloatArray], measured: FloatArray,
               noise_cov: FloatArray, observed: npt.NDArray[np.bool_]) -> UKFUpdate:
    """Condition each patient's Gaussian on the entries of `measured` (n, m) that are
    `observed` (n, m); masked entries leave the filter as it was.

    `observe` maps points (n, s, d) to predicted measurements (n, s, m); `noise_cov` is
    (n, m, m).
    """
    xp = array_namespace(mean, cov)
    measured, noise_cov = xp.asarray(measured), xp.asarray(noise_cov)
    observed = xp.asarray(observed)
    d = mean.shape[-1]
    m = measured.shape[-1]
    wm, wc, _ = sigma_weights(params, d)
    wc = xp.asarray(wc)
    points = sigma_points(params, mean, cov)
    predicted, y_dev, pyy = _moments(xp, observe(points), xp.asarray(wm), wc)
    x_dev = points - mean[:, None, :]
    pxy = (xp.swapaxes(x_dev, -1, -2) * wc) @ y_dev
    mask = xp.asarray(observed, dtype=xp.float64)
    both = mask[:, :, None] * mask[:, None, :]
    eye = xp.eye(m)
    s = (pyy + noise_cov) * both + eye * (1.0 - mask)[:, None, :]
    innovation = xp.where(observed, xp.nan_to_num(measured - predicted), 0.0)
    log_det: FloatArray
    if m == 1:  # one measured channel: scalar algebra, no batched LAPACK calls
        gain = pxy * mask[:, None, :] / s[:, :, 0][:, None, :]
        solved = innovation / xp.sqrt(s[:, :, 0])
        log_det = xp.log(s[:, 0, 0])
    else:
        gain = xp.swapaxes(
            xp.linalg.solve(s, xp.swapaxes(pxy * mask[:, None, :], -1, -2)), -1, -2)
        chol = safe_cholesky(s)
        solved = xp.linalg.solve(chol, innovation[..., None])[..., 0]
        log_det = 2.0 * xp.log(xp.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)
    new_mean = mean + (gain @ innovation[..., None])[..., 0]
    new_cov = cov - gain @ s @ xp.swapaxes(gain, -1, -2)
    new_cov = 0.5 * (new_cov + xp.swapaxes(new_cov, -1, -2))
    n_observed = mask.sum(axis=-1)
    loglik = -0.5 * ((solved**2).sum(axis=-1) + log_det + n_observed * _LOG_2PI)
    return UKFUpdate(new_mean, new_cov, innovation, s, xp.where(n_observed > 0, loglik, 0.0))
