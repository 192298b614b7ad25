"""The batched UKF: exact on linear-Gaussian models, masked updates, batching, robustness."""

from __future__ import annotations

import numpy as np
import pytest

from medtwin.estimation import UKFParams, safe_cholesky, ukf_predict, ukf_update

PARAMS = UKFParams()


def _linear_problem(n: int, d: int, m: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d, d)) * 0.3 + np.eye(d)
    h = rng.normal(size=(n, m, d))
    q = np.stack([x @ x.T + 0.1 * np.eye(d) for x in rng.normal(size=(n, d, d)) * 0.2])
    r = np.stack([x @ x.T + 0.2 * np.eye(m) for x in rng.normal(size=(n, m, m)) * 0.3])
    mean = rng.normal(size=(n, d))
    p = np.stack([x @ x.T + np.eye(d) for x in rng.normal(size=(n, d, d))])
    y = rng.normal(size=(n, m))
    return {"a": a, "h": h, "q": q, "r": r, "mean": mean, "p": p, "y": y}


def _kalman(pb: dict[str, np.ndarray], observed: np.ndarray) -> tuple[np.ndarray, ...]:
    """Textbook Kalman filter, one patient at a time, on the observed entries only."""
    means, covs, logliks = [], [], []
    for i in range(pb["a"].shape[0]):
        a, h, q, r = pb["a"][i], pb["h"][i], pb["q"][i], pb["r"][i]
        x = a @ pb["mean"][i]
        p = a @ pb["p"][i] @ a.T + q
        keep = observed[i]
        if keep.any():
            hk, rk, yk = h[keep], r[np.ix_(keep, keep)], pb["y"][i][keep]
            s = hk @ p @ hk.T + rk
            k = p @ hk.T @ np.linalg.inv(s)
            e = yk - hk @ x
            x, p = x + k @ e, p - k @ s @ k.T
            ll = -0.5 * (e @ np.linalg.solve(s, e) + np.log(np.linalg.det(s))
                         + keep.sum() * np.log(2 * np.pi))
        else:
            ll = 0.0
        means.append(x)
        covs.append(p)
        logliks.append(ll)
    return np.array(means), np.array(covs), np.array(logliks)


def _ukf(pb: dict[str, np.ndarray], observed: np.ndarray):  # type: ignore[no-untyped-def]
    mean, cov = ukf_predict(PARAMS, pb["mean"], pb["p"],
                            lambda pts: np.einsum("nij,nsj->nsi", pb["a"], pts), pb["q"])
    return ukf_update(PARAMS, mean, cov, lambda pts: np.einsum("nij,nsj->nsi", pb["h"], pts),
                      pb["y"], pb["r"], observed)


@pytest.mark.parametrize(("d", "m"), [(1, 1), (3, 2), (7, 3)])
def test_linear_gaussian_equals_the_kalman_filter(d: int, m: int) -> None:
    pb = _linear_problem(40, d, m, seed=d * 10 + m)
    observed = np.ones((40, m), dtype=bool)
    result = _ukf(pb, observed)
    mean, cov, loglik = _kalman(pb, observed)
    assert np.allclose(result.mean, mean, atol=1e-9)
    assert np.allclose(result.cov, cov, atol=1e-9)
    assert np.allclose(result.loglik, loglik, atol=1e-9)


@pytest.mark.parametrize("m", [1, 3])
def test_masked_entries_are_as_if_never_measured(m: int) -> None:
    pb = _linear_problem(60, 4, m, seed=7)
    observed = np.random.default_rng(1).random((60, m)) < 0.5
    observed[:5] = False
    result = _ukf(pb, observed)
    mean, cov, loglik = _kalman(pb, observed)
    assert np.allclose(result.mean, mean, atol=1e-9)
    assert np.allclose(result.cov, cov, atol=1e-9)
    assert np.allclose(result.loglik, loglik, atol=1e-9)
    assert np.all(result.innovation[~observed] == 0.0)
    assert np.all(result.loglik[:5] == 0.0)


def test_a_batch_equals_each_patient_alone() -> None:
    pb = _linear_problem(8, 3, 2, seed=3)
    observed = np.ones((8, 2), dtype=bool)
    together = _ukf(pb, observed)
    for i in range(8):
        alone = _ukf({k: v[i:i + 1] for k, v in pb.items()}, observed[i:i + 1])
        assert np.allclose(alone.mean, together.mean[i:i + 1], atol=1e-12)
        assert np.allclose(alone.cov, together.cov[i:i + 1], atol=1e-12)


def test_a_broken_covariance_is_repaired_not_fatal() -> None:
    good = np.eye(3)[np.newaxis].repeat(4, axis=0)
    broken = good.copy()
    broken[2] = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, -1e-6]])
    chol = safe_cholesky(broken)
    assert np.allclose(chol[[0, 1, 3]], np.eye(3))
    rebuilt = chol[2] @ chol[2].T
    assert np.all(np.linalg.eigvalsh(rebuilt) > 0)


def test_nonlinear_filter_is_consistent() -> None:
    """Normalized estimation error squared over many simulated patients averages to about
    the state dimension: the filter's uncertainty is honest."""
    rng = np.random.default_rng(11)
    n, steps, q, r = 400, 40, 0.05, 0.3

    def f(x: np.ndarray) -> np.ndarray:
        return x + 0.3 * np.sin(x)

    def h(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, 0.5 * x**2 / (1 + x**2)], axis=-1)

    truth = rng.normal(size=(n, 1))
    mean, cov = np.zeros((n, 1)), np.eye(1)[np.newaxis].repeat(n, axis=0)
    nees = []
    for _ in range(steps):
        truth = f(truth) + rng.normal(scale=np.sqrt(q), size=(n, 1))
        y = h(truth) + rng.normal(scale=np.sqrt(r), size=(n, 2))
        mean, cov = ukf_predict(PARAMS, mean, cov, f, np.full((n, 1, 1), q))
        out = ukf_update(PARAMS, mean, cov, h, y, np.eye(2)[np.newaxis].repeat(n, 0) * r,
                         np.ones((n, 2), dtype=bool))
        mean, cov = out.mean, out.cov
        err = truth - mean
        nees.append((err[:, 0] ** 2 / cov[:, 0, 0]).mean())
    assert 0.7 < float(np.mean(nees[5:])) < 1.4
