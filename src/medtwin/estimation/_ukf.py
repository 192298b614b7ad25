"""An Unscented Kalman Filter over many patients at once (NumPy), as pure functions.

Every array has a leading patient axis: means (n, d), covariances (n, d, d), measurements
(n, m). `ukf_predict` and `ukf_update` take the model as functions of batched points, so one
call filters every patient; nothing is stored between calls (the state is the arguments).

Sigma points and weights follow the scaled unscented transform (Julier 2002; Wan & van der
Merwe, "The Unscented Kalman Filter for Nonlinear Estimation", 2000). Covariances are kept
symmetric and positive definite: a Cholesky factor that fails is repaired by clipping
eigenvalues, per patient, without touching the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

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
    sym = np.asarray(0.5 * (cov + np.swapaxes(cov, -1, -2)), dtype=np.float64)
    try:
        return np.asarray(np.linalg.cholesky(sym), dtype=np.float64)
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(sym)
        repaired = (vectors * np.maximum(values, MIN_EIGENVALUE)[..., None, :]) @ np.swapaxes(
            vectors, -1, -2)
        return np.asarray(np.linalg.cholesky(0.5 * (repaired + np.swapaxes(repaired, -1, -2))),
                          dtype=np.float64)


def sigma_points(params: UKFParams, mean: FloatArray, cov: FloatArray) -> FloatArray:
    """Sigma points (n, 2d + 1, d) of each patient's Gaussian."""
    d = mean.shape[-1]
    _, _, spread = sigma_weights(params, d)
    scaled = spread * np.swapaxes(safe_cholesky(cov), -1, -2)   # rows: columns of L
    centre = mean[:, np.newaxis, :]
    return np.concatenate([centre, centre + scaled, centre - scaled], axis=1)


def _moments(points: FloatArray, wm: FloatArray,
             wc: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Weighted mean (n, k), deviations (n, 2d+1, k) and covariance (n, k, k) of points."""
    mean = wm @ points
    dev = points - mean[:, np.newaxis, :]
    cov = (np.swapaxes(dev, -1, -2) * wc) @ dev
    return mean, dev, cov


def ukf_predict(params: UKFParams, mean: FloatArray, cov: FloatArray,
                transition: Callable[[FloatArray], FloatArray],
                process_cov: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Propagate each patient's Gaussian through `transition` (points (n, s, d) → (n, s, d),
    inputs and parameters bound in) and add `process_cov` (n, d, d)."""
    wm, wc, _ = sigma_weights(params, mean.shape[-1])
    moved = transition(sigma_points(params, mean, cov))
    new_mean, _, new_cov = _moments(moved, wm, wc)
    new_cov = new_cov + process_cov
    return new_mean, 0.5 * (new_cov + np.swapaxes(new_cov, -1, -2))


def ukf_update(params: UKFParams, mean: FloatArray, cov: FloatArray,
               observe: Callable[[FloatArray], FloatArray], measured: FloatArray,
               noise_cov: FloatArray, observed: npt.NDArray[np.bool_]) -> UKFUpdate:
    """Condition each patient's Gaussian on the entries of `measured` (n, m) that are
    `observed` (n, m); masked entries leave the filter as it was.

    `observe` maps points (n, s, d) to predicted measurements (n, s, m); `noise_cov` is
    (n, m, m).
    """
    d = mean.shape[-1]
    m = measured.shape[-1]
    wm, wc, _ = sigma_weights(params, d)
    points = sigma_points(params, mean, cov)
    predicted, y_dev, pyy = _moments(observe(points), wm, wc)
    x_dev = points - mean[:, np.newaxis, :]
    pxy = (np.swapaxes(x_dev, -1, -2) * wc) @ y_dev
    mask = observed.astype(np.float64)
    both = mask[:, :, np.newaxis] * mask[:, np.newaxis, :]
    eye = np.eye(m)
    s = (pyy + noise_cov) * both + eye * (1.0 - mask)[:, np.newaxis, :]
    innovation = np.where(observed, np.nan_to_num(measured - predicted), 0.0)
    log_det: FloatArray
    if m == 1:  # one measured channel: scalar algebra, no batched LAPACK calls
        gain = pxy * mask[:, np.newaxis, :] / s[:, :, 0][:, np.newaxis, :]
        solved = innovation / np.sqrt(s[:, :, 0])
        log_det = np.asarray(np.log(s[:, 0, 0]), dtype=np.float64)
    else:
        gain = np.swapaxes(
            np.linalg.solve(s, np.swapaxes(pxy * mask[:, np.newaxis, :], -1, -2)), -1, -2)
        chol = safe_cholesky(s)
        solved = np.asarray(np.linalg.solve(chol, innovation[..., np.newaxis])[..., 0],
                            dtype=np.float64)
        log_det = np.asarray(2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1),
                             dtype=np.float64)
    new_mean = mean + (gain @ innovation[..., np.newaxis])[..., 0]
    new_cov = cov - gain @ s @ np.swapaxes(gain, -1, -2)
    new_cov = 0.5 * (new_cov + np.swapaxes(new_cov, -1, -2))
    n_observed = mask.sum(axis=-1)
    loglik = -0.5 * ((solved**2).sum(axis=-1) + log_det + n_observed * _LOG_2PI)
    return UKFUpdate(new_mean, new_cov, innovation, s, np.where(n_observed > 0, loglik, 0.0))
