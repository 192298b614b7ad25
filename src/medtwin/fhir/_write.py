"""R4 validation of resources and writing them as Bulk Data NDJSON."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from medtwin.errors import FhirError
from medtwin.fhir._codes import RESOURCE_TYPE

#: Most pydantic error locations named in one message (the rest are counted).
MAX_REPORTED_ERRORS = 10


def validate_resource(resource: Mapping[str, Any]) -> None:
    """Raise `FhirError` unless `resource` is a valid FHIR R4 resource (via R4B models)."""
    rtype = resource.get("resourceType") if isinstance(resource, Mapping) else None
    if not isinstance(rtype, str) or not RESOURCE_TYPE.fullmatch(rtype):
        raise FhirError("validate: resourceType is missing or not a FHIR resource type")
    try:
        model = get_fhir_model_class(rtype)
    except ValueError:
        model = None
    if model is None or not issubclass(model, Resource):
        raise FhirError(f"validate: {rtype} is not an R4 resource type")
    # FHIR JSON forbids empty arrays, objects and strings, and nulls; the models allow them.
    empty = list(_empty_locations(resource, ""))
    if empty:
        listed = "; ".join(f"{loc} (empty)" for loc in empty[:MAX_REPORTED_ERRORS])
        raise FhirError(f"validate: {rtype} is not valid R4: {listed}")
    try:
        model.model_validate(dict(resource))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        # Locations and error types only: pydantic messages may quote the offending value.
        where = [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'} ({e['type']})"
            for e in errors[:MAX_REPORTED_ERRORS]
        ]
        more = len(errors) - len(where)
        tail = f"; and {more} more" if more > 0 else ""
        raise FhirError(f"validate: {rtype} is not valid R4: {'; '.join(where)}{tail}") from None


def _empty_locations(value: Any, loc: str) -> Iterator[str]:
    """Dotted locations (as pydantic writes them) of empty or null values under `value`."""
    if value is None or (isinstance(value, str | list | dict) and not value):
        yield loc or "<root>"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _empty_locations(item, f"{loc}.{key}" if loc else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _empty_locations(item, f"{loc}.{i}")


def write_ndjson(path: str | os.PathLike[str], resources: Iterable[Mapping[str, Any]]) -> int:
    """Write one compact JSON resource per line (UTF-8, mode 0600, atomic); return how many."""
    target = Path(path)
    count = 0
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for count, resource in enumerate(resources, start=1):
                try:
                    line = json.dumps(
                        resource, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                    )
                except (TypeError, ValueError):
                    raise FhirError(
                        f"write: resource {count} is not finite JSON"
                    ) from None
                f.write(line)
                f.write("\n")
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return count
