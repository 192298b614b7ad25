"""ReplayBG (py-replay-bg 1.4, Cappon et al. 2023) on the same what-if task as medtwin: MAP
twinning on days 1..n-1 (one day at a time, each day starting from the previous day's end, as
in ReplayBG's own interval examples), then a replay of day n under an altered therapy from
the end of day n-1.

ReplayBG wants a 5-min grid (its documented `yts`): the 3-min records are binned to 5 min
(carbs and insulin summed and turned into rates, the CGM read at each bin's end).
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from cohort import DAY_STEPS, DT_MIN, Trace

YTS = 5
MINUTES_PER_DAY = 1440


def _label(minute_of_day: float) -> str:
    """ReplayBG's meal labels from simglucose's meal windows (breakfast 5–9 h, lunch
    10–14 h, dinner 16–20 h, snacks otherwise)."""
    h = minute_of_day / 60.0
    if 5 <= h < 9:
        return "B"
    if 10 <= h < 14:
        return "L"
    if 16 <= h < 20:
        return "D"
    return "S"


def to_replaybg_frame(trace: Trace, day: int, start: datetime) -> Any:
    """Day `day` (0-based) of `trace` as ReplayBG's data frame on its 5-min grid."""
    import pandas as pd

    sl = slice(day * DAY_STEPS, (day + 1) * DAY_STEPS)
    minutes = np.arange(1, DAY_STEPS + 1) * DT_MIN             # end of each 3-min step
    starts = minutes - DT_MIN
    bins = np.floor(starts / YTS).astype(int)                   # input at the step's start
    n_bins = MINUTES_PER_DAY // YTS
    cho = np.bincount(bins, trace.carbs[sl], n_bins) / YTS      # g/min
    bolus = np.bincount(bins, trace.bolus[sl], n_bins) / YTS    # U/min
    basal = np.bincount(bins, trace.basal[sl], n_bins) / YTS
    glucose = np.interp(np.arange(n_bins) * YTS + YTS, minutes, trace.cgm[sl])
    labels = np.array([_label(m * YTS) if c > 0 else "" for m, c in enumerate(cho)])
    blabels = np.array([_label(m * YTS) if b > 0 else "" for m, b in enumerate(bolus)])
    t0 = start + timedelta(days=day)
    return pd.DataFrame({
        "t": pd.to_datetime([t0 + timedelta(minutes=YTS * m) for m in range(n_bins)]),
        "glucose": glucose, "cho": cho, "cho_label": labels, "bolus": bolus,
        "bolus_label": blabels, "basal": basal,
    })


def replaybg_whatif(name: str, body_weight: float, usual: Trace, altered: dict[str, Trace],
                    folder: str, days: int, start: datetime, quiet: bool = True
                    ) -> dict[str, Any]:
    """Twin on days 1..days-1, replay day `days` under each altered trace; plasma glucose of
    each replay on the 3-min grid, and the twinning time (s)."""
    from py_replay_bg.py_replay_bg import ReplayBG

    os.makedirs(folder, exist_ok=True)
    sink = io.StringIO()
    rbg = ReplayBG(blueprint="multi-meal", save_folder=folder, yts=YTS, exercise=False,
                   seed=1, verbose=not quiet, plot_mode=False)
    x0: list[float] | None = None
    previous: str | None = None
    tag = name.replace("#", "_")
    t_twin = 0.0
    for day in range(days - 1):
        data = to_replaybg_frame(usual, day, start)
        save = f"{tag}_day{day + 1}"
        done = os.path.join(folder, "results", "map", f"map_{save}.pkl")
        t = time.perf_counter()
        with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
            if os.path.exists(done) and os.path.exists(done + ".seconds"):
                with open(done + ".seconds") as f:   # twinned before: reuse, with its time
                    t_twin += float(f.read())
            else:
                rbg.twin(data=data, bw=body_weight, save_name=save, twinning_method="map",
                         parallelize=False, x0=x0, previous_data_name=previous)
                seconds = time.perf_counter() - t
                t_twin += seconds
                with open(done + ".seconds", "w") as f:
                    f.write(repr(seconds))
            res = rbg.replay(data=data, bw=body_weight, save_name=save, twinning_method="map",
                             x0=x0, previous_data_name=previous, n_replay=1)
        x0 = res["x_end"]["realizations"][0].tolist()
        previous = save
    out: dict[str, Any] = {"twin_s": t_twin, "replays": {}}
    grid = (np.arange(1, DAY_STEPS + 1) * DT_MIN).astype(int) - 1   # minute index of each end
    for label, trace in altered.items():
        data = to_replaybg_frame(trace, 0, start + timedelta(days=days - 1))
        t = time.perf_counter()
        with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
            res = rbg.replay(data=data, bw=body_weight, save_name=previous,
                             twinning_method="map", x0=x0,
                             previous_data_name=previous, n_replay=1)
        glucose = np.asarray(res["glucose"]["median"], dtype=float)
        out["replays"][label] = {"plasma": glucose[np.minimum(grid, glucose.size - 1)],
                                 "replay_s": time.perf_counter() - t}
    return out
