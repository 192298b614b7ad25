"""The codec between FHIR R4 (Bulk Data NDJSON) and medtwin's domain.

Reading: `read_ndjson` turns Observations and insulin MedicationAdministrations into raw rows
(`ImportBatch`) for the gate, reporting broken lines as `ImportIssue`s.  Writing: builders
return plain JSON dicts valid as R4 (`validate_resource` checks with fhir.resources R4B) and
`write_ndjson` writes them one per line.
"""

from medtwin.fhir._build import (
    DETECTED_ISSUE_SEVERITY,
    GUARD_HIGH_CONFIDENCE,
    GUARD_MODERATE_CONFIDENCE,
    alert_detected_issue,
    estimate_observation,
    finding_detected_issue,
    forecast_observation,
    insulin_administration,
    provenance,
    reading_observation,
    rejection_detected_issue,
    simulation_observation,
)
from medtwin.fhir._codes import (
    ACTIVITY_SYSTEM,
    EVIDENCE_SYSTEM,
    FINDING_SYSTEM,
    GATE_SYSTEM,
    GUARD_EXTENSION,
    GUARD_SYSTEM,
    MAX_LINE_BYTES,
    MAX_TOKEN_CHARS,
    METHOD_SYSTEM,
    PREDICTION_SYSTEM,
    UCUM,
)
from medtwin.fhir._read import (
    ImportBatch,
    ImportIssue,
    ImportRow,
    read_ndjson,
    read_ndjson_file,
)
from medtwin.fhir._write import validate_resource, write_ndjson

__all__ = [
    "ACTIVITY_SYSTEM",
    "DETECTED_ISSUE_SEVERITY",
    "EVIDENCE_SYSTEM",
    "FINDING_SYSTEM",
    "GATE_SYSTEM",
    "GUARD_EXTENSION",
    "GUARD_HIGH_CONFIDENCE",
    "GUARD_MODERATE_CONFIDENCE",
    "GUARD_SYSTEM",
    "MAX_LINE_BYTES",
    "MAX_TOKEN_CHARS",
    "METHOD_SYSTEM",
    "PREDICTION_SYSTEM",
    "UCUM",
    "ImportBatch",
    "ImportIssue",
    "ImportRow",
    "alert_detected_issue",
    "estimate_observation",
    "finding_detected_issue",
    "forecast_observation",
    "insulin_administration",
    "provenance",
    "read_ndjson",
    "read_ndjson_file",
    "reading_observation",
    "rejection_detected_issue",
    "simulation_observation",
    "validate_resource",
    "write_ndjson",
]
