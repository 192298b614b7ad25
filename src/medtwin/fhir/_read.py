"""FHIR R4 Bulk Data NDJSON -> raw reading rows, one bad line never stopping the rest.

Each line is read in steps; a line failing one becomes an `ImportIssue` and reading goes on:

    (0) size: a line over `MAX_LINE_BYTES` is refused unparsed
    (1) JSON: one object with a `resourceType` (NaN/Infinity and runaway nesting refused)
    (2) type: `Observation` and `MedicationAdministration` are read; others are counted
        in `skipped`, as are entered-in-error/cancelled/not-done ones and non-insulin drugs
    (3) id: the resource's own, else a stable `line-<n>`, giving the row's `source`
    (4) subject: a `Patient/<id>` reference
    (5) time: effectiveDateTime | effectiveInstant | effectivePeriod.start, with a timezone
    (6) value: a finite number without a comparator, its unit and the code

Rows stay raw on purpose: unknown codes, wrong units and impossible values pass through so
that the gate refuses them with its own reasons.  The code of an Observation row is its
first LOINC code that is a channel's, else its first LOINC code, else "" (no LOINC coding);
a blood-pressure panel without a value of its own gives one row per component with a
`valueQuantity`.  The unit is `Quantity.code` (UCUM), else `Quantity.unit` as given, else "";
one exception: an insulin dose with no code whose unit is "U" or "IU" gets "[IU]", since
those are how the international unit is displayed (UCUM "U" would be the enzyme unit).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from medtwin.domain import LOINC, SNOMED, Channel
from medtwin.errors import FhirError
from medtwin.fhir._codes import (
    ID,
    MAX_LINE_BYTES,
    MAX_TOKEN_CHARS,
    PATIENT_REFERENCE,
    RESOURCE_TYPE,
)
from medtwin.fhir._time import parse_time_ms

_CHANNEL_LOINC = frozenset(c.code for c in Channel if c.spec.system == LOINC)
_INSULIN_UNITS = frozenset({"U", "IU"})
_SKIP_OBSERVATION = frozenset({"entered-in-error", "cancelled"})
_SKIP_ADMINISTRATION = frozenset({"entered-in-error", "not-done"})
_TOO_LONG = f"line is longer than {MAX_LINE_BYTES} bytes"
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One raw reading as read from a resource, before the gate has judged it."""

    patient_id: str
    code: str
    unit: str
    value: float
    time_ms: int
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class ImportIssue:
    """A line that could not be read: its 1-based number, resource (if known) and why."""

    line: int
    source: str | None
    reason: str

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"line {self.line}{where}: {self.reason}"

    def error(self) -> FhirError:
        """The issue as a `FhirError`, for callers that want to stop at the first one."""
        return FhirError(f"{self.source}: {self.reason}" if self.source else self.reason,
                         self.line)


@dataclass(frozen=True, slots=True, eq=False)
class ImportBatch:
    """Rows read from NDJSON as columns of shape (n_rows,), plus what was not read.

    `codes`, `units`, `patient_ids`, `sources` are fixed-width str arrays (codes and units at
    most `MAX_TOKEN_CHARS`), so the gate can test them with array operations; `lines` holds
    each row's 1-based line number.  `skipped` counts resources read but not imported.
    """

    patient_ids: npt.NDArray[np.str_]
    codes: npt.NDArray[np.str_]
    units: npt.NDArray[np.str_]
    values: npt.NDArray[np.float64]
    time_ms: npt.NDArray[np.int64]
    sources: npt.NDArray[np.str_]
    lines: npt.NDArray[np.int64]
    issues: tuple[ImportIssue, ...] = ()
    skipped: Mapping[str, int] = field(default_factory=dict)
    n_lines: int = 0

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[ImportRow],
        issues: Iterable[ImportIssue] = (),
        skipped: Mapping[str, int] | None = None,
        n_lines: int = 0,
    ) -> ImportBatch:
        """Columns from rows."""
        rows = list(rows)
        return cls(
            patient_ids=np.array([r.patient_id for r in rows], dtype=np.str_),
            codes=np.array([r.code for r in rows], dtype=np.str_),
            units=np.array([r.unit for r in rows], dtype=np.str_),
            values=np.fromiter((r.value for r in rows), np.float64, len(rows)),
            time_ms=np.fromiter((r.time_ms for r in rows), np.int64, len(rows)),
            sources=np.array([r.source for r in rows], dtype=np.str_),
            lines=np.fromiter((r.line for r in rows), np.int64, len(rows)),
            issues=tuple(issues),
            skipped=dict(skipped or {}),
            n_lines=n_lines,
        )

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_skipped(self) -> int:
        """How many resources were read but deliberately not imported."""
        return sum(self.skipped.values())

    def rows(self) -> list[ImportRow]:
        """The rows as objects (for tests and reports, not for the hot path)."""
        return [
            ImportRow(str(p), str(c), str(u), float(v), int(t), str(s), int(n))
            for p, c, u, v, t, s, n in zip(
                self.patient_ids, self.codes, self.units, self.values, self.time_ms,
                self.sources, self.lines, strict=True,
            )
        ]


def read_ndjson(lines: Iterable[str]) -> ImportBatch:
    """Read FHIR R4 NDJSON lines (with or without their newlines) into an `ImportBatch`."""
    reader = _Reader()
    for lineno, text in enumerate(lines, start=1):
        body = text.rstrip("\r\n")
        # (0): size (a str of at most MAX/4 characters cannot exceed MAX bytes)
        if len(body) > MAX_LINE_BYTES // 4 and _utf8_len(body) > MAX_LINE_BYTES:
            reader.refuse(lineno, _TOO_LONG)
        else:
            reader.read(lineno, body)
    return reader.batch()


def read_ndjson_file(path: str | PathLike[str]) -> ImportBatch:
    """Read a FHIR R4 NDJSON file, holding at most `MAX_LINE_BYTES` of any line in memory."""
    reader = _Reader()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(_bounded_lines(f), start=1):
            if raw is None:
                reader.refuse(lineno, _TOO_LONG)
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                reader.refuse(lineno, "line is not valid UTF-8")
                continue
            reader.read(lineno, text)
    return reader.batch()


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _bounded_lines(f: BinaryIO) -> Iterator[bytes | None]:
    """Lines of at most `MAX_LINE_BYTES` (+ newline); None for a longer one, skipped unread."""
    while chunk := f.readline(MAX_LINE_BYTES + 3):
        if len(chunk.rstrip(b"\r\n")) <= MAX_LINE_BYTES:
            yield chunk
            continue
        while not chunk.endswith(b"\n") and (chunk := f.readline(_CHUNK)):
            pass
        yield None


class _LineError(Exception):
    """A structural problem of one line; its message is the issue's reason."""


class _Reader:
    """Accumulates rows, issues and skip counts over the lines of one file."""

    def __init__(self) -> None:
        self.rows: list[ImportRow] = []
        self.issues: list[ImportIssue] = []
        self.skipped: dict[str, int] = {}
        self.n_lines = 0

    def refuse(self, lineno: int, reason: str) -> None:
        self.n_lines = lineno
        self.issues.append(ImportIssue(lineno, None, reason))

    def read(self, lineno: int, text: str) -> None:
        self.n_lines = lineno
        text = text.rstrip("\r\n")
        if lineno == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            return
        source: str | None = None
        try:
            # (1): JSON
            resource = _parse_json(text)
            # (2): type
            rtype = resource.get("resourceType")
            if not isinstance(rtype, str) or not RESOURCE_TYPE.fullmatch(rtype):
                raise _LineError("resourceType is missing or not a FHIR resource type")
            if rtype not in _READERS:
                self._skip(rtype)
                return
            # (3): id
            rid = resource.get("id", f"line-{lineno}")
            if not isinstance(rid, str) or not ID.fullmatch(rid):
                raise _LineError(f"{rtype}.id is not a valid FHIR id")
            source = f"{rtype}/{rid}"
            # (4)-(6): per type
            result = _READERS[rtype](resource, source, lineno)
        except _LineError as exc:
            self.issues.append(ImportIssue(lineno, source, str(exc)))
            return
        if isinstance(result, str):
            self._skip(result)
        else:
            self.rows.extend(result)

    def _skip(self, key: str) -> None:
        self.skipped[key] = self.skipped.get(key, 0) + 1

    def batch(self) -> ImportBatch:
        return ImportBatch.from_rows(self.rows, self.issues, self.skipped, self.n_lines)


def _reject_constant(name: str) -> float:
    raise ValueError("non-finite number")


def _parse_json(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _LineError("line is not valid JSON") from None
    if not isinstance(obj, dict):
        raise _LineError("line is not a JSON object")
    return obj


def _child(obj: Mapping[str, Any], key: str, path: str) -> dict[str, Any] | None:
    """`obj[key]` if it is an object, None if absent; a `_LineError` if it is anything else."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _LineError(f"{path} is not an object")
    return value


def _children(obj: Mapping[str, Any], key: str, path: str) -> list[dict[str, Any]]:
    """`obj[key]` as a list of objects ([] if absent)."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _LineError(f"{path} is not a list of objects")
    return value


def _token(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    """A short string field (code, unit, system), None if absent."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _LineError(f"{path} is not a string")
    if len(value) > MAX_TOKEN_CHARS:
        raise _LineError(f"{path} is longer than {MAX_TOKEN_CHARS} characters")
    return value


def _patient(resource: Mapping[str, Any], rtype: str) -> str:
    # (4): subject
    subject = _child(resource, "subject", f"{rtype}.subject")
    ref = subject.get("reference") if subject is not None else None
    if ref is None:
        raise _LineError(f"{rtype}.subject.reference is missing")
    m = PATIENT_REFERENCE.fullmatch(ref) if isinstance(ref, str) else None
    if m is None:
        raise _LineError(f"{rtype}.subject.reference is not a Patient reference")
    return m[1]


def _time_ms(resource: Mapping[str, Any], rtype: str) -> int:
    # (5): time
    candidates: list[tuple[str, Any]] = [
        ("effectiveDateTime", resource.get("effectiveDateTime")),
        ("effectiveInstant", resource.get("effectiveInstant")),
    ]
    period = _child(resource, "effectivePeriod", f"{rtype}.effectivePeriod")
    if period is not None:
        candidates.append(("effectivePeriod.start", period.get("start")))
    for name, value in candidates:
        if value is None:
            continue
        if not isinstance(value, str):
            raise _LineError(f"{rtype}.{name} is not a string")
        try:
            return parse_time_ms(value, f"{rtype}.{name}")
        except ValueError as exc:
            raise _LineError(str(exc)) from None
    raise _LineError(f"{rtype}.effective[x] is missing")


def _quantity(quantity: Mapping[str, Any], path: str) -> tuple[float, str, str | None]:
    """(value, unit, code-or-None) of a Quantity: value finite, no comparator."""
    # (6): value
    if quantity.get("comparator") is not None:
        raise _LineError(f"{path}.comparator is set (a bound is not a reading)")
    value = quantity.get("value")
    if value is None:
        raise _LineError(f"{path}.value is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _LineError(f"{path}.value is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _LineError(f"{path}.value is not a finite number")
    code = _token(quantity, "code", f"{path}.code")
    unit = _token(quantity, "unit", f"{path}.unit")
    return number, unit or "", code


def _loinc_code(concept: Mapping[str, Any], path: str) -> str:
    """The first channel LOINC code of a CodeableConcept, else its first LOINC code, else ""."""
    first = ""
    for i, coding in enumerate(_children(concept, "coding", f"{path}.coding")):
        if coding.get("system") != LOINC:
            continue
        code = _token(coding, "code", f"{path}.coding[{i}].code")
        if code in _CHANNEL_LOINC:
            return code
        if code and not first:
            first = code
    return first


def _observation(resource: Mapping[str, Any], source: str, lineno: int) -> list[ImportRow] | str:
    """Rows of one Observation, or the `skipped` key if it is not to be imported."""
    status = resource.get("status")
    if isinstance(status, str) and status in _SKIP_OBSERVATION:
        return f"Observation ({status})"
    concept = _child(resource, "code", "Observation.code")
    if concept is None:
        raise _LineError("Observation.code is missing")
    patient = _patient(resource, "Observation")
    time_ms = _time_ms(resource, "Observation")
    quantity = _child(resource, "valueQuantity", "Observation.valueQuantity")
    parts: list[tuple[str, Mapping[str, Any], str]] = []
    if quantity is not None:
        parts.append((_loinc_code(concept, "Observation.code"), quantity,
                      "Observation.valueQuantity"))
    else:
        for i, comp in enumerate(_children(resource, "component", "Observation.component")):
            path = f"Observation.component[{i}]"
            comp_quantity = _child(comp, "valueQuantity", f"{path}.valueQuantity")
            comp_code = _child(comp, "code", f"{path}.code")
            if comp_quantity is not None and comp_code is not None:
                parts.append((_loinc_code(comp_code, f"{path}.code"), comp_quantity,
                              f"{path}.valueQuantity"))
    if not parts:
        raise _LineError("Observation.valueQuantity is missing")
    rows = []
    for code, q, path in parts:
        value, unit, ucum = _quantity(q, path)
        rows.append(ImportRow(patient, code, ucum or unit, value, time_ms, source, lineno))
    return rows


def _is_insulin(resource: Mapping[str, Any]) -> bool:
    """True if the medication is coded SNOMED CT insulin or named insulin in any text."""
    concept = _child(resource, "medicationCodeableConcept",
                     "MedicationAdministration.medicationCodeableConcept")
    ref = _child(resource, "medicationReference", "MedicationAdministration.medicationReference")
    if concept is None and ref is None:
        raise _LineError("MedicationAdministration.medication[x] is missing")
    texts: list[Any] = []
    if concept is not None:
        texts.append(concept.get("text"))
        for coding in _children(concept, "coding",
                                "MedicationAdministration.medicationCodeableConcept.coding"):
            if coding.get("system") == SNOMED and coding.get("code") == Channel.INSULIN.code:
                return True
            texts.append(coding.get("display"))
    if ref is not None:
        texts.append(ref.get("display"))
    return any(isinstance(t, str) and "insulin" in t.casefold() for t in texts)


def _administration(
    resource: Mapping[str, Any], source: str, lineno: int
) -> list[ImportRow] | str:
    """The insulin dose row of one MedicationAdministration, or the `skipped` key."""
    status = resource.get("status")
    if isinstance(status, str) and status in _SKIP_ADMINISTRATION:
        return f"MedicationAdministration ({status})"
    if not _is_insulin(resource):
        return "MedicationAdministration (not insulin)"
    patient = _patient(resource, "MedicationAdministration")
    time_ms = _time_ms(resource, "MedicationAdministration")
    dosage = _child(resource, "dosage", "MedicationAdministration.dosage")
    dose = _child(dosage, "dose", "MedicationAdministration.dosage.dose") if dosage else None
    if dose is None:
        raise _LineError("MedicationAdministration.dosage.dose is missing")
    value, unit, ucum = _quantity(dose, "MedicationAdministration.dosage.dose")
    if ucum is None and unit in _INSULIN_UNITS:
        ucum = Channel.INSULIN.ucum
    return [ImportRow(patient, Channel.INSULIN.code, ucum or unit, value, time_ms, source, lineno)]


_READERS: dict[str, Callable[[Mapping[str, Any], str, int], list[ImportRow] | str]] = {
    "Observation": _observation, "MedicationAdministration": _administration,
}
