"""Forecast and simulation Observations: valid R4, the 95 % interval and horizon as coded
components, the method, issued and effective times; and they read back as one glucose row."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medtwin.domain import LOINC, Channel
from medtwin.errors import FhirError
from medtwin.fhir import (
    METHOD_SYSTEM,
    PREDICTION_SYSTEM,
    UCUM,
    forecast_observation,
    read_ndjson,
    simulation_observation,
    validate_resource,
)

ISSUED = 1_714_550_400_123  # 2024-05-01T08:00:00.123Z
TARGET = ISSUED + 30 * 60_000
BUILDERS = {"forecast": forecast_observation, "simulation": simulation_observation}


def _components(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for comp in resource["component"]:
        (coding,) = comp["code"]["coding"]
        assert coding["system"] == PREDICTION_SYSTEM
        out[coding["code"]] = comp["valueQuantity"]
    return out


@pytest.mark.parametrize("method", sorted(BUILDERS))
def test_a_prediction_is_a_valid_glucose_observation(method: str) -> None:
    r = BUILDERS[method]("pat-1", 118.5, 96.0, 141.0, ISSUED, TARGET, 30.0,
                         ["Observation/cgm-7", "Observation/meal-2"], "pred-1")
    validate_resource(r)
    assert r["status"] == "preliminary"
    assert r["code"]["coding"] == [{"system": LOINC, "code": "99504-3",
                                    "display": Channel.GLUCOSE.spec.display}]
    assert r["method"]["coding"] == [{"system": METHOD_SYSTEM, "code": method}]
    assert r["issued"] == "2024-05-01T08:00:00.123Z"
    assert r["effectiveDateTime"] == "2024-05-01T08:30:00.123Z"
    assert r["subject"] == {"reference": "Patient/pat-1"}
    assert r["valueQuantity"] == {"value": 118.5, "unit": "mg/dL", "system": UCUM,
                                  "code": "mg/dL"}
    assert r["derivedFrom"] == [{"reference": "Observation/cgm-7"},
                                {"reference": "Observation/meal-2"}]
    assert "referenceRange" not in r
    comps = _components(r)
    assert set(comps) == {"lower-95", "upper-95", "horizon"}
    assert comps["lower-95"] == {"value": 96.0, "unit": "mg/dL", "system": UCUM,
                                 "code": "mg/dL"}
    assert comps["upper-95"]["value"] == 141.0
    assert comps["horizon"] == {"value": 30.0, "unit": "min", "system": UCUM, "code": "min"}


def test_without_inputs_there_is_no_derived_from() -> None:
    r = simulation_observation("pat-1", 100.0, 100.0, 100.0, ISSUED, ISSUED, 0, [], "s-0")
    validate_resource(r)
    assert "derivedFrom" not in r


@pytest.mark.parametrize(("args", "message"), [
    ((100.0, 110.0, 120.0), r"interval does not hold the value"),
    ((130.0, 110.0, 120.0), r"interval does not hold the value"),
    ((math.nan, 90.0, 120.0), r"^fhir: Observation.valueQuantity.value: not a finite number$"),
    ((100.0, -math.inf, 120.0), r"component\[lower-95\].valueQuantity.value: not a finite"),
    ((100.0, 90.0, math.inf), r"component\[upper-95\].valueQuantity.value: not a finite"),
])
def test_bad_values_are_refused_without_echoing_them(args: tuple[float, float, float],
                                                     message: str) -> None:
    with pytest.raises(FhirError, match=message) as info:
        forecast_observation("pat-1", *args, ISSUED, TARGET, 30.0, [], "f-1")
    assert "110" not in str(info.value) and "130" not in str(info.value)


@pytest.mark.parametrize("horizon", [-5.0, math.nan, math.inf])
def test_bad_horizons_are_refused(horizon: float) -> None:
    with pytest.raises(FhirError, match=r"component\[horizon\].*not a finite number of min"):
        forecast_observation("pat-1", 100.0, 90.0, 110.0, ISSUED, TARGET, horizon, [], "f-1")


def test_bad_ids_and_references_are_refused() -> None:
    with pytest.raises(FhirError, match=r"^fhir: Observation.id: not a valid FHIR id$"):
        forecast_observation("pat-1", 100.0, 90.0, 110.0, ISSUED, TARGET, 30.0, [], "bad id")
    with pytest.raises(FhirError, match=r"Observation.derivedFrom\[0\]: not a relative"):
        simulation_observation("pat-1", 100.0, 90.0, 110.0, ISSUED, TARGET, 30.0, ["x"], "s")
    with pytest.raises(FhirError, match=r"Observation.issued: time is outside"):
        forecast_observation("pat-1", 100.0, 90.0, 110.0, 10**16, TARGET, 30.0, [], "f-1")


bands = st.tuples(*(st.floats(10.0, 1000.0) for _ in range(3))).map(sorted)


@given(bands, st.integers(0, 10**12), st.integers(0, 24 * 60), st.sampled_from(sorted(BUILDERS)))
def test_predictions_read_back_as_one_glucose_row(band: list[float], issued: int,
                                                  horizon: int, method: str) -> None:
    low, mean, high = band
    target = issued + horizon * 60_000
    r = BUILDERS[method]("pat-9", mean, low, high, issued, target, float(horizon),
                         ["Observation/a"], "p-1")
    validate_resource(r)
    batch = read_ndjson([json.dumps(r)])
    assert batch.issues == ()
    (row,) = batch.rows()
    assert (row.patient_id, row.code, row.unit) == ("pat-9", "99504-3", "mg/dL")
    assert row.value == mean and row.time_ms == target
