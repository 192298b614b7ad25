"""The glucose twin on a stream of readings: a batch of CGM, carbohydrate and insulin readings
folded into each patient's UKF, batched over patients, with forecasts per CGM reading.

What it reports for the glucose channel (LOINC 99504-3, glucose in interstitial fluid) is
the channel's own quantity: the interstitial glucose a noise-free CGM would read, estimated
and forecast; CGM-based hypoglycaemia levels are defined on it (Battelino et al. 2019,
Diabetes Care 42:1593). The twin's plasma (blood) glucose, which leads it by the sensor lag,
is reported beside it.

Each patient's readings are taken in order (the caller's processing order: arrival, then
time), and the k-th readings of all patients in the batch go through one batched filter
step (`glucose_filter_step`), so the loop runs over the most readings any one patient has in
the batch, never over readings. The result depends only on each patient's sequence of
readings, not on how packets were grouped into batches.

The filter steps at CGM values only (t: the value's time):

- a CGM value predicts from the filter's time to t with the inputs pending, then updates;
  one older than the filter's time is late and updates nothing (its innovation is NaN);
- carbohydrates (g) and insulin (U) become pending and are given at the start of the next
  step, i.e. at the time of the latest CGM value before them (at most one CGM interval
  early; a late meal or dose still counts); at equal times CGM values go first (see
  `processing_order`);
- insulin is what was *delivered*, basal included (a pump reports its basal as small
  doses), while the model's inputs are doses on top of its own basal infusion: each
  patient keeps a basal credit that grows at the model's basal rate (`basal_infusion_rate`)
  over each step, up to `BASAL_CREDIT_MAX_MIN` minutes' worth, and delivered insulin first
  pays it off. A pump delivering the model's basal adds nothing; a bolus adds itself (less
  at most 15 minutes of basal for a pen user who reports boluses only);
- the filter starts at a patient's first CGM value (plasma and interstitial glucose set to
  it with the spread of `_start_cov`, the rest at the model's basal state with the prior's
  spread; no innovation); inputs reported before it are given from then. A gap longer than
  `MAX_GAP_MIN` starts it afresh the same way: nothing is known about what happened in
  between.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from medtwin.domain import Channel
from medtwin.estimation._glucose_twin import (
    GlucoseFilterState,
    GlucoseNoise,
    glucose_filter_init,
    glucose_filter_step,
    glucose_forecast,
)
from medtwin.estimation._smoother import NO_TIME
from medtwin.physiology import GlucoseParams, GlucoseState, basal_infusion_rate

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Forecast horizons (min) reported with every CGM reading.
FORECAST_HORIZONS_MIN: tuple[float, ...] = (30.0, 60.0)
#: A gap in a patient's glucose data longer than this (min) restarts their filter.
MAX_GAP_MIN = 240.0
#: The basal credit never exceeds this many minutes of the model's basal infusion.
BASAL_CREDIT_MAX_MIN = 15.0
_MS_PER_MIN = 60_000.0
_GLUCOSE_CHANNELS = (Channel.GLUCOSE, Channel.CARBS, Channel.INSULIN)


class GlucoseRows(NamedTuple):
    """Glucose twin rows of n patients: the filter's Gaussian (`mean` (n, d), `cov`
    (n, d, d)), its time `time_ms` (n,) (`NO_TIME` before its first CGM value), carbohydrates
    `carbs_g` and insulin above basal `insulin_u` (n,) pending for the next step, and the
    basal credit `credit_u` (n,)."""

    mean: FloatArray
    cov: FloatArray
    time_ms: IntArray
    carbs_g: FloatArray
    insulin_u: FloatArray
    credit_u: FloatArray

    def take(self, rows: npt.NDArray[np.intp] | slice) -> GlucoseRows:
        """Copies of some rows."""
        return GlucoseRows(self.mean[rows].copy(), self.cov[rows].copy(),
                           self.time_ms[rows].copy(), self.carbs_g[rows].copy(),
                           self.insulin_u[rows].copy(), self.credit_u[rows].copy())

    def put(self, rows: npt.NDArray[np.intp], new: GlucoseRows) -> None:
        """Overwrite some rows with `new` (in place)."""
        for current, value in zip(self, new, strict=True):
            current[rows] = value


def glucose_rows(params: GlucoseParams, n: int) -> GlucoseRows:
    """n patients that have seen nothing: the filter's prior, no pending input."""
    prior = glucose_filter_init(params, n)
    zeros = np.zeros(n)
    return GlucoseRows(prior.mean, prior.cov, np.full(n, NO_TIME, np.int64), zeros,
                       zeros.copy(), zeros.copy())


def _start_cov(noise: GlucoseNoise) -> FloatArray:
    """Covariance of plasma and interstitial glucose at the first CGM value: the sensor's
    error for the interstitial, twice that for plasma (it may be moving away behind the
    sensor lag), correlated 0.9."""
    sd = np.array([2.0, 1.0]) * float(noise.cgm_std)
    corr = np.array([[1.0, 0.9], [0.9, 1.0]])
    return np.asarray(sd[:, np.newaxis] * corr * sd[np.newaxis, :], dtype=np.float64)


def processing_order(row: npt.NDArray[np.intp], channel: npt.NDArray[np.int8],
                     time_ms: IntArray, arrival: IntArray) -> npt.NDArray[np.intp]:
    """Reading indices in the order `glucose_events` takes them: by patient, arrival, time,
    and at equal times CGM values before inputs (a meal and the CGM value of its time: the
    value does not yet show the meal)."""
    return np.lexsort((channel != Channel.GLUCOSE, time_ms, arrival, row)).astype(np.intp)


def take_params(params: GlucoseParams, rows: npt.NDArray[np.intp]) -> GlucoseParams:
    """The parameter rows of some patients."""
    return GlucoseParams(*(np.asarray(f)[rows] for f in params))


class GlucoseReadings(NamedTuple):
    """What the glucose twin made of each reading (the batch's order; NaN where the reading
    is not a CGM value the filter used), in mg/dL: `estimate` and `estimate_sd` of the
    glucose channel's quantity, interstitial glucose (what a noise-free CGM would read),
    right after it, and `plasma`, `plasma_sd` of plasma (blood) glucose; the CGM
    `innovation` and its variance `innovation_var`; `forecast`, `forecast_low`,
    `forecast_high` (n_readings, len(horizons)) of interstitial glucose `horizons_min` after
    the filter's time, given the inputs known then, with the 95 % interval; `filter_time_ms`
    (n_readings,) the filter's time after the reading, the time forecasts are issued at
    (`NO_TIME` where NaN).
    """

    estimate: FloatArray
    estimate_sd: FloatArray
    plasma: FloatArray
    plasma_sd: FloatArray
    innovation: FloatArray
    innovation_var: FloatArray
    forecast: FloatArray
    forecast_low: FloatArray
    forecast_high: FloatArray
    filter_time_ms: IntArray

    def slice(self, start: int, stop: int) -> GlucoseReadings:
        """The entries of readings start..stop-1."""
        k = slice(start, stop)
        return GlucoseReadings(self.estimate[k], self.estimate_sd[k], self.plasma[k],
                               self.plasma_sd[k], self.innovation[k], self.innovation_var[k],
                               self.forecast[k], self.forecast_low[k], self.forecast_high[k],
                               self.filter_time_ms[k])


class GlucoseEvents(NamedTuple):
    """A batch folded into the glucose twin: the patients' `rows` after it, and per reading
    what the twin made of it."""

    rows: GlucoseRows
    readings: GlucoseReadings


def glucose_events(
    params: GlucoseParams,
    noise: GlucoseNoise,
    rows: GlucoseRows,
    row: npt.NDArray[np.intp],
    channel: npt.NDArray[np.int8],
    value: FloatArray,
    time_ms: IntArray,
    order: npt.NDArray[np.intp],
    horizons_min: Sequence[float] = FORECAST_HORIZONS_MIN,
) -> GlucoseEvents:
    """Fold readings into the glucose twin rows; pure (see the module docstring).

    `row` (n_readings,) indexes each reading's patient in `rows` and `params` (fields (n,));
    `order` lists reading indices in processing order (each patient's readings in the order
    they apply). Readings of other channels are ignored.
    """
    n_readings = value.shape[0]
    h = len(horizons_min)
    est, sd, plasma, plasma_sd, innov, innov_var = (np.full(n_readings, np.nan)
                                                    for _ in range(6))
    fc, lo, hi = (np.full((n_readings, h), np.nan) for _ in range(3))
    issued = np.full(n_readings, NO_TIME, np.int64)
    state = rows.take(slice(None))
    relevant = np.isin(channel[order], np.array(_GLUCOSE_CHANNELS, dtype=np.int8))
    seq = np.asarray(order[relevant], dtype=np.intp)
    if seq.size == 0:
        return GlucoseEvents(state, GlucoseReadings(est, sd, plasma, plasma_sd, innov,
                                                    innov_var, fc, lo, hi, issued))
    # The rank of each reading among its patient's readings (seq groups patients together
    # only if `order` does; ranks count per patient either way).
    patient = row[seq]
    by_patient = np.argsort(patient, kind="stable")
    sorted_patient = patient[by_patient]
    first = np.searchsorted(sorted_patient, sorted_patient, side="left")
    rank = np.empty(seq.size, np.int64)
    rank[by_patient] = np.arange(seq.size) - first
    basal = basal_infusion_rate(params)
    saved: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], FloatArray, FloatArray,
                      FloatArray, FloatArray]] = []
    for k in range(int(rank.max()) + 1):
        idx = seq[rank == k]
        r = row[idx]
        ch, v, t = channel[idx], value[idx], time_ms[idx]
        p = take_params(params, r)
        gap = (state.time_ms[r] != NO_TIME) & (
            (t - state.time_ms[r]) / _MS_PER_MIN > MAX_GAP_MIN)
        if gap.any():
            prior = glucose_filter_init(take_params(p, np.flatnonzero(gap)), int(gap.sum()))
            restart = r[gap]
            state.mean[restart], state.cov[restart] = prior.mean, prior.cov
            state.time_ms[restart] = NO_TIME
            state.carbs_g[restart] = state.insulin_u[restart] = state.credit_u[restart] = 0.0
        waiting = state.time_ms[r] == NO_TIME
        is_cgm = (ch == Channel.GLUCOSE) & np.isfinite(v) & (waiting | (t >= state.time_ms[r]))
        innovation, innovation_var = np.full(idx.size, np.nan), np.full(idx.size, np.nan)
        dt = np.zeros(idx.size)
        begin = waiting & is_cgm
        if begin.any():  # the first CGM value sets glucose; pending inputs are given next
            rb = r[begin]
            g = np.array([GlucoseState.G, GlucoseState.GI])
            state.mean[rb[:, np.newaxis], g] = v[begin][:, np.newaxis]
            state.cov[rb[:, np.newaxis, np.newaxis], g[:, np.newaxis], g] = _start_cov(noise)
            state.time_ms[rb] = t[begin]
            state.credit_u[rb] = 0.0
        stepping = np.flatnonzero(is_cgm & ~begin)
        if stepping.size:  # predict to the CGM's time with the pending inputs, then update
            rs = r[stepping]
            dt[stepping] = (t[stepping] - state.time_ms[rs]) / _MS_PER_MIN
            step = glucose_filter_step(
                take_params(p, stepping), noise,
                GlucoseFilterState(state.mean[rs], state.cov[rs]), dt[stepping],
                state.carbs_g[rs], state.insulin_u[rs], v[stepping],
                np.ones(stepping.size, bool))
            state.mean[rs], state.cov[rs] = step.state.mean, step.state.cov
            innovation[stepping] = step.innovation
            innovation_var[stepping] = step.innovation_var
            state.carbs_g[rs] = state.insulin_u[rs] = 0.0
            state.time_ms[rs] = t[stepping]
        now = state.time_ms[r]
        credit = np.minimum(state.credit_u[r] + basal[r] * dt, basal[r] * BASAL_CREDIT_MAX_MIN)
        amount = np.where(np.isfinite(v), np.maximum(v, 0.0), 0.0)   # never a non-finite dose
        delivered = np.where(ch == Channel.INSULIN, amount, 0.0)
        state.insulin_u[r] += np.maximum(delivered - credit, 0.0)
        state.credit_u[r] = np.maximum(credit - delivered, 0.0)
        state.carbs_g[r] += np.where(ch == Channel.CARBS, amount, 0.0)
        cgm = idx[is_cgm]
        if cgm.size:
            rc = r[is_cgm]
            est[cgm] = state.mean[rc, GlucoseState.GI]
            sd[cgm] = np.sqrt(state.cov[rc, GlucoseState.GI, GlucoseState.GI])
            plasma[cgm] = state.mean[rc, GlucoseState.G]
            plasma_sd[cgm] = np.sqrt(state.cov[rc, GlucoseState.G, GlucoseState.G])
            innov[cgm] = innovation[is_cgm]
            innov_var[cgm] = innovation_var[is_cgm]
            issued[cgm] = now[is_cgm]
            saved.append((cgm, rc, state.mean[rc], state.cov[rc], state.carbs_g[rc],
                          state.insulin_u[rc]))
    if saved and h:  # every forecast of the batch in one call, with the inputs pending then
        cgm, rc, mean, cov, carbs, insulin = (np.concatenate(part) for part in zip(*saved,
                                                                                     strict=True))
        fc[cgm], lo[cgm], hi[cgm] = glucose_forecast(
            take_params(params, rc), GlucoseFilterState(mean, cov), horizons_min, carbs,
            insulin, noise, interstitial=True)
    return GlucoseEvents(state, GlucoseReadings(est, sd, plasma, plasma_sd, innov,
                                                innov_var, fc, lo, hi, issued))


def glucose_forecast_now(params: GlucoseParams, noise: GlucoseNoise, rows: GlucoseRows,
                         horizons_min: Sequence[float] = FORECAST_HORIZONS_MIN
                         ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Forecasts of interstitial glucose (mean, low, high, each (n, h)) from each patient's
    filter time with the inputs pending now; NaN for patients that have no glucose data yet."""
    n = rows.mean.shape[0]
    mean, low, high = glucose_forecast(params, GlucoseFilterState(rows.mean, rows.cov),
                                       horizons_min, rows.carbs_g, rows.insulin_u, noise,
                                       interstitial=True)
    unknown = (rows.time_ms == NO_TIME)[:, np.newaxis]
    shape = (n, len(horizons_min))
    return (np.where(unknown, np.nan, mean).reshape(shape),
            np.where(unknown, np.nan, low).reshape(shape),
            np.where(unknown, np.nan, high).reshape(shape))
