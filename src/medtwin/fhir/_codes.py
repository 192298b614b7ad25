"""Code systems, limits and id/reference syntax shared by the FHIR reader and builders."""

from __future__ import annotations

import re

#: UCUM, the system of every `Quantity` medtwin writes.
UCUM = "http://unitsofmeasure.org"
#: medtwin's own code systems (one page each under https://medtwin.dev/fhir/CodeSystem/).
METHOD_SYSTEM = "https://medtwin.dev/fhir/CodeSystem/method"
FINDING_SYSTEM = "https://medtwin.dev/fhir/CodeSystem/finding"
GATE_SYSTEM = "https://medtwin.dev/fhir/CodeSystem/gate"
EVIDENCE_SYSTEM = "https://medtwin.dev/fhir/CodeSystem/evidence"
#: What the guard concluded about a stream or a device (`FindingCode` values).
GUARD_SYSTEM = "https://medtwin.dev/fhir/CodeSystem/guard-finding"
#: Extensions of a guard finding's DetectedIssue; one definition each under this base.
GUARD_EXTENSION = "https://medtwin.dev/fhir/StructureDefinition/guard-"
ACTIVITY_SYSTEM = "https://medtwin.dev/fhir/CodeSystem/provenance-activity"
#: Components of a predicted value: its 95 % interval bounds and horizon.
PREDICTION_SYSTEM = "https://medtwin.dev/fhir/CodeSystem/prediction"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

#: Largest NDJSON line read, in bytes (prevents one line from exhausting memory).
MAX_LINE_BYTES = 1024 * 1024
#: Longest code or unit string read (one long string would widen every fixed-width column).
MAX_TOKEN_CHARS = 64

#: FHIR `id`: 1-64 of [A-Za-z0-9-.].
ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: A relative literal reference `Type/id` (the only kind medtwin writes).
REFERENCE = re.compile(r"[A-Z][A-Za-z]{0,63}/[A-Za-z0-9\-.]{1,64}")
#: A reference to a Patient, relative or absolute, optionally versioned; group 1 is the id.
PATIENT_REFERENCE = re.compile(
    r"(?:.*/)?Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
#: A FHIR resource type name.
RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
#: FHIR `code`: no leading, trailing or repeated whitespace.
CODE = re.compile(r"[^\s]+( [^\s]+)*")
