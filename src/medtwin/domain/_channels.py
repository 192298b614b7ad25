"""Sensor and therapy channels: what a reading measures, its LOINC code, UCUM unit and limits."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """Coding and limits of one channel.

    `possible_min`/`possible_max` bound what a living patient can show (or a therapy can be);
    a value outside them is a device or transmission error, never physiology.
    """

    code: str
    system: str
    display: str
    ucum: str
    unit_display: str
    possible_min: float
    possible_max: float
    is_input: bool


LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


class Channel(enum.IntEnum):
    """A measured vital sign or a therapy input; the integer value indexes twin arrays."""

    GLUCOSE = 0
    HEART_RATE = 1
    SPO2 = 2
    RESP_RATE = 3
    SYSTOLIC_BP = 4
    DIASTOLIC_BP = 5
    TEMPERATURE = 6
    CARBS = 7
    INSULIN = 8

    @property
    def spec(self) -> ChannelSpec:
        """The channel's coding and limits."""
        return _SPECS[self]

    @property
    def code(self) -> str:
        return _SPECS[self].code

    @property
    def ucum(self) -> str:
        return _SPECS[self].ucum

    @property
    def is_input(self) -> bool:
        return _SPECS[self].is_input

    @classmethod
    def from_code(cls, code: str) -> Channel:
        """The channel with this LOINC (or, for insulin, SNOMED CT) code; KeyError if none."""
        return _BY_CODE[code]


_SPECS: dict[Channel, ChannelSpec] = {
    Channel.GLUCOSE: ChannelSpec(
        "99504-3", LOINC, "Glucose [Mass/volume] in Interstitial fluid", "mg/dL", "mg/dL",
        10.0, 1000.0, False,
    ),
    Channel.HEART_RATE: ChannelSpec("8867-4", LOINC, "Heart rate", "/min", "beats/min",
                                    20.0, 300.0, False),
    Channel.SPO2: ChannelSpec(
        "59408-5", LOINC, "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%",
        30.0, 100.0, False,
    ),
    Channel.RESP_RATE: ChannelSpec("9279-1", LOINC, "Respiratory rate", "/min", "breaths/min",
                                   0.0, 80.0, False),
    Channel.SYSTOLIC_BP: ChannelSpec("8480-6", LOINC, "Systolic blood pressure", "mm[Hg]",
                                     "mmHg", 40.0, 300.0, False),
    Channel.DIASTOLIC_BP: ChannelSpec("8462-4", LOINC, "Diastolic blood pressure", "mm[Hg]",
                                      "mmHg", 20.0, 200.0, False),
    Channel.TEMPERATURE: ChannelSpec("8310-5", LOINC, "Body temperature", "Cel", "°C",
                                     25.0, 45.0, False),
    Channel.CARBS: ChannelSpec("9059-7", LOINC, "Carbohydrate intake Estimated", "g", "g",
                               0.0, 500.0, True),
    # Insulin doses are administrations, not observations: coded with SNOMED CT "Insulin
    # (substance)"; the dose unit is the international unit, UCUM "[IU]", displayed "U".
    Channel.INSULIN: ChannelSpec("67866001", SNOMED, "Insulin", "[IU]", "U", 0.0, 100.0, True),
}
_BY_CODE: dict[str, Channel] = {spec.code: ch for ch, spec in _SPECS.items()}

N_CHANNELS = len(Channel)
VITAL_CHANNELS: tuple[Channel, ...] = tuple(c for c in Channel if not c.is_input)

#: Arrays indexed by `Channel` value, for vectorized checks over a batch of readings.
POSSIBLE_MIN = np.array([_SPECS[c].possible_min for c in Channel], dtype=np.float64)
POSSIBLE_MAX = np.array([_SPECS[c].possible_max for c in Channel], dtype=np.float64)
