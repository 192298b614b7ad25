"""The batched UKF and the glucose model on torch tensors (float64) agree with NumPy."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from medtwin._array import array_namespace
from medtwin.estimation import UKFParams, safe_cholesky, sigma_points, ukf_predict, ukf_update
from medtwin.physiology import (
    GlucoseParams,
    basal_infusion_rate,
    default_glucose_params,
    glucose_dynamics,
    glucose_observation,
    steady_state,
)

torch = pytest.importorskip("torch", reason="torch not installed (optional: pip install "
                                            "medtwin[gpu]); the NumPy backend is tested anyway")

TOL = 1e-10
DEVICE = torch.device("cpu")  # the code follows the inputs' device; CI has no GPU


def _t(a: np.ndarray[Any, Any]) -> Any:
    return torch.as_tensor(a, device=DEVICE)


def _close(tensor: Any, array: np.ndarray[Any, Any]) -> None:
    assert isinstance(tensor, torch.Tensor)
    assert tensor.device == DEVICE and tensor.dtype in (torch.float64, torch.bool)
    np.testing.assert_allclose(tensor.cpu().numpy(), array, rtol=TOL, atol=TOL)


def _gaussians(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray[Any, Any], ...]:
    mean = rng.normal(size=(n, d))
    a = rng.normal(size=(n, d, d))
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d)
    return mean, cov


def test_namespace_is_numpy_unless_a_tensor_is_given() -> None:
    assert array_namespace(np.zeros(2), 1.0) is np
    xp = array_namespace(np.zeros(2), torch.zeros(2))
    assert xp is not np and xp.device == DEVICE


def test_importing_medtwin_does_not_import_torch() -> None:
    code = "import sys, medtwin.estimation, medtwin.physiology; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("m", [1, 2])
def test_ukf_predict_and_masked_update_match_numpy(m: int) -> None:
    rng = np.random.default_rng(m)
    n, d = 64, 3
    mean, cov = _gaussians(rng, n, d)
    transition = rng.normal(size=(d, d)) * 0.3 + np.eye(d)
    process = np.broadcast_to(0.01 * np.eye(d), (n, d, d)).copy()
    noise = np.broadcast_to(0.1 * np.eye(m), (n, m, m)).copy()
    measured = rng.normal(size=(n, m))
    measured[3, 0] = np.nan  # missing, and masked
    observed = rng.random((n, m)) < 0.7
    observed[3, 0] = False
    observed[:4] = False  # some patients see nothing
    params = UKFParams()
    transition_t = _t(transition)

    want = ukf_predict(params, mean, cov, lambda z: z @ transition.T, process)
    got = ukf_predict(params, _t(mean), _t(cov), lambda z: z @ transition_t.T, _t(process))
    for g, w in zip(got, want, strict=True):
        _close(g, w)

    def observe(z: Any) -> Any:
        return z[..., :m] ** 2 + z[..., -1:]

    want_u = ukf_update(params, want[0], want[1], observe, measured, noise, observed)
    got_u = ukf_update(params, got[0], got[1], observe, _t(measured), _t(noise), _t(observed))
    for g, w in zip(got_u, want_u, strict=True):
        _close(g, w)
    assert float(got_u.loglik[:4].abs().max()) == 0.0
    # NumPy inputs mixed in (noise, mask) follow the tensors' namespace and device
    mixed = ukf_update(params, got[0], got[1], observe, measured, noise, observed)
    _close(mixed.mean, want_u.mean)


def test_non_positive_definite_covariance_is_repaired_the_same_way() -> None:
    rng = np.random.default_rng(7)
    mean, cov = _gaussians(rng, 8, 3)
    cov[:3] = -np.eye(3)  # not positive definite: eigenvalues clipped
    cov[3] = np.diag([1.0, 0.0, 2.0])  # singular
    _close(safe_cholesky(_t(cov)), safe_cholesky(cov))
    _close(sigma_points(UKFParams(), _t(mean), _t(cov)), sigma_points(UKFParams(), mean, cov))


def _patients(rng: np.random.Generator, n: int) -> GlucoseParams:
    return GlucoseParams(*(f * rng.uniform(0.6, 1.4, n) for f in default_glucose_params(n)))


@pytest.mark.parametrize("sigma", [None, 7])
def test_glucose_dynamics_matches_numpy(sigma: int | None) -> None:
    rng = np.random.default_rng(3)
    n = 40
    params = _patients(rng, n)
    x = steady_state(params)
    if sigma is not None:
        x = np.repeat(x[:, None, :], sigma, axis=1)
    x = x * rng.uniform(0.5, 1.5, x.shape)
    u = rng.uniform(-1.0, 60.0, (*x.shape[:-1], 2))
    dt = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(0.0, 30.0, n))  # mixed substeps
    params_t = GlucoseParams(*(_t(f) for f in params))
    for step in (dt, 5.0):
        want = glucose_dynamics(x, u, params, step)
        step_t = _t(step) if isinstance(step, np.ndarray) else step
        _close(glucose_dynamics(_t(x), _t(u), params_t, step_t), want)
        _close(glucose_dynamics(_t(x), _t(u), params, step), want)  # NumPy params
    _close(glucose_observation(_t(x), params_t), glucose_observation(x, params))
    _close(steady_state(params_t), steady_state(params))
    _close(basal_infusion_rate(params_t), basal_infusion_rate(params))


def test_glucose_dynamics_rejects_bad_steps_on_torch() -> None:
    params = default_glucose_params(2)
    x = _t(steady_state(params))
    with pytest.raises(ValueError, match="physiology: dt_min must be finite and non-negative"):
        glucose_dynamics(x, torch.zeros(2, 2, dtype=torch.float64), params, -1.0)
