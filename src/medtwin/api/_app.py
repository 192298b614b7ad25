"""The FastAPI app: packet ingestion, patients and twins, alerts, audit, and a live stream."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from medtwin.access import Caller, Permission, Role, allows, new_token
from medtwin.api._auth import caller_of, require, token_hash_of
from medtwin.api._batcher import IngestBatcher
from medtwin.api._ledger import ledger_router
from medtwin.api._limits import RateLimiter, RegisteredDevices, address_of, throttled_response
from medtwin.config import ID_PATTERN, MAX_ID_LENGTH, MAX_PACKET_BYTES
from medtwin.domain import Device, DeviceStatus, RejectReason
from medtwin.errors import (
    ChainError,
    ConfigError,
    ConflictError,
    GateRejection,
    InvalidInputError,
    MedtwinError,
    NotFoundError,
    PatientErasedError,
)
from medtwin.ingest import MAX_HANDSHAKE_BYTES, decode_json
from medtwin.ledger import binding_message
from medtwin.pipeline import (
    MAX_WHATIF_STEPS,
    Accepted,
    Outcome,
    Pipeline,
    SessionSubmission,
    SignedSubmission,
    SiteConsent,
    alert_json,
    finding_json,
    twin_state_json,
    whatif_json,
)

#: Seconds between keep-alive comments on the live stream (keeps proxies from closing it).
STREAM_KEEPALIVE_S = 15.0

_REJECTION_STATUS = {
    RejectReason.MALFORMED: 400,
    RejectReason.TOO_LARGE: 413,
    RejectReason.UNSUPPORTED_SUITE: 400,
    RejectReason.UNKNOWN_DEVICE: 401,
    RejectReason.BAD_SIGNATURE: 401,
    RejectReason.QUARANTINED_DEVICE: 403,
    RejectReason.REPLAYED_SEQUENCE: 409,
    RejectReason.CLOCK_SKEW: 422,
    RejectReason.UNKNOWN_CHANNEL: 422,
    RejectReason.WRONG_UNIT: 422,
    RejectReason.IMPOSSIBLE_VALUE: 422,
    RejectReason.UNKNOWN_PATIENT: 422,
    RejectReason.UNKNOWN_SESSION: 401,
    RejectReason.SESSION_EXPIRED: 401,
    RejectReason.BAD_SESSION_TAG: 401,
}

IdStr = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]


#: An Ethereum address (the chain account a consent token is held by or granted to).
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
Address = Annotated[str, Field(pattern=ADDRESS_PATTERN)]


class PatientIn(BaseModel):
    patient_id: IdStr
    owner: Address | None = Field(None, description="The patient's chain address: their twin's "
                                                    "consent token is minted to it (needed "
                                                    "where the site requires consent)")


class DeviceKeyIn(BaseModel):
    suite: str = "ed25519"
    public_key: str = Field(description="The device's new raw public key, base64")
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class LogKeyIn(BaseModel):
    suite: str | None = Field(None, description="Signature suite of the new log key "
                                                "(default: the current key's)")
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class KekIn(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class OwnerIn(BaseModel):
    owner: Address


class DeviceIn(BaseModel):
    device_id: IdStr
    patient_id: IdStr
    suite: str = "ed25519"
    public_key: str = Field(description="The device's raw public key, base64")


class WhatIfEvent(BaseModel):
    """A meal and/or an insulin dose `minutes` from now (insulin on top of the usual basal)."""

    model_config = ConfigDict(allow_inf_nan=False)

    minutes: Annotated[float, Field(ge=0, le=2880)]
    carbs_g: Annotated[float, Field(ge=0, le=500)] = 0.0
    insulin_u: Annotated[float, Field(ge=0, le=100)] = 0.0


class WhatIfIn(BaseModel):
    """A future to simulate: events, a change of basal rate (U/h, on top of the usual),
    and how far ahead on what grid."""

    model_config = ConfigDict(allow_inf_nan=False)

    events: Annotated[list[WhatIfEvent], Field(max_length=200)] = []
    basal_change_u_per_h: Annotated[float, Field(ge=-10, le=10)] = 0.0
    hours: Annotated[float, Field(gt=0, le=48)] = 4.0
    step_min: Annotated[float, Field(ge=1, le=60)] = 5.0


class PersonalizeIn(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    days: Annotated[float, Field(gt=0, le=30)] = 2.0


class StatusIn(BaseModel):
    """Why a device's status changes: who checked what (no patient data)."""

    reason: Annotated[str, Field(min_length=1, max_length=500)]


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")   # an "address" is bound by its holder only

    name: Annotated[str, Field(min_length=1, max_length=128)]
    role: Role


class AddressIn(BaseModel):
    address: Address
    signature: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{130}$", description=(
        "EIP-191 signature (65 bytes, hex) by the address's key of the message from "
        "GET /v1/tokens/me/binding"))]


def _packet_answer(outcome: Outcome, limiter: RateLimiter, address: str) -> JSONResponse:
    """The answer to one ingested packet (signed or session), once durable."""
    if isinstance(outcome, Accepted):
        limiter.vouch(outcome.device_id, address)
        return JSONResponse({"status": "accepted", "leaf_index": outcome.leaf_index,
                             "device_id": outcome.device_id, "seq": outcome.seq,
                             "readings": outcome.n_readings, "held": int(outcome.held.sum())})
    error = outcome.error
    return JSONResponse({"status": "rejected", "reason": error.reason.value,
                         "detail": str(error), "leaf_index": outcome.leaf_index},
                        status_code=_REJECTION_STATUS[error.reason])


def _event_patient(event: dict[str, Any]) -> str | None:
    """The patient a live-stream event is about."""
    body = event.get("state") or event.get("alert") or event.get("finding") or {}
    patient = body.get("patient_id")
    return patient if isinstance(patient, str) else None


async def _read_capped(request: Request, limit: int) -> tuple[bytes, int]:
    """The request body, but never more than `limit` + 1 bytes of it in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return b"", int(declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return b"", size
        chunks.append(chunk)
    return b"".join(chunks), size


def create_app(pipeline: Pipeline, consent: SiteConsent | None = None) -> FastAPI:
    """The API of one site, serving `pipeline`; with `consent`, reading a patient's twin
    needs the patient's grant on the chain (purpose treatment), and every decision is kept."""
    batcher = IngestBatcher(pipeline, pipeline.settings.max_batch)
    limiter = RateLimiter(pipeline.clock, RegisteredDevices(
        lambda: [d.device_id for d in pipeline.devices()]))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="medtwin", version="0.1.0", lifespan=lifespan,
                  description="Secure digital twin kernel: signed device packets in; twin "
                              "states, alerts and a verifiable log out.")
    app.state.pipeline = pipeline
    app.state.limiter = limiter
    read_twin = Depends(require(Permission.READ_TWIN))
    read_audit = Depends(require(Permission.READ_AUDIT))
    manage = Depends(require(Permission.MANAGE))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 without echoing the input back (it may be patient data, or a NaN that JSON
        cannot carry)."""
        return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                                         "type": e.get("type", "")} for e in exc.errors()]},
                            status_code=422)

    @app.exception_handler(MedtwinError)
    async def medtwin_error(_request: Request, exc: MedtwinError) -> JSONResponse:
        code = (503 if isinstance(exc, ChainError)
                else 410 if isinstance(exc, PatientErasedError)
                else 404 if isinstance(exc, NotFoundError)
                else 409 if isinstance(exc, ConflictError)
                else 422 if isinstance(exc, ConfigError | InvalidInputError) else 500)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    def consented(caller: Caller, patient_id: str) -> None:
        """Refuse (403, with the reason) a read of a twin the patient has not granted."""
        if consent is None:
            return
        decision = consent.decide(caller, patient_id)
        if not decision.allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"api: no consent to read this twin: {decision.reason}")

    def readable(caller: Caller, patient_ids: set[str],
                 previous: set[str] | None = None) -> set[str]:
        """The patients among `patient_ids` whose twins the caller may read (`previous`: what
        a stream re-deciding was allowed until now)."""
        return (patient_ids if consent is None
                else consent.readable(caller, patient_ids, previous))

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, str]:
        """Liveness probe; needs no token."""
        return {"status": "ok"}

    @app.post("/v1/packets", tags=["ingest"], responses={
        200: {"description": "Accepted and durable"},
        400: {"description": "Malformed"}, 401: {"description": "Unknown device or bad signature"},
        409: {"description": "Replayed sequence"},
        413: {"description": "Too large"}, 422: {"description": "Readings refused"},
        429: {"description": "Rate-limited: nothing stored; see Retry-After"}})
    async def ingest_packet(request: Request) -> JSONResponse:
        """Ingest one signed device packet; authenticated by the device's signature, not a
        token. Answers only once the packet (or its rejection) is durable."""
        body, size = await _read_capped(request, MAX_PACKET_BYTES)
        submission = (SignedSubmission.from_bytes(body) if size <= MAX_PACKET_BYTES
                      else SignedSubmission(None, size))
        address = address_of(request)
        throttled = await limiter.admit(submission.envelope, address)
        if throttled is not None:  # answered here: a flood never reaches the gate or log
            return throttled_response(throttled)
        return _packet_answer(await batcher.submit(submission), limiter, address)

    @app.get("/v1/session-key", tags=["ingest"])
    def session_key() -> dict[str, Any]:
        """The site's session KEM key (suite, public key in base64 and its id) that a device
        encapsulates to in a session handshake, signed by the site's log key (with the log
        key rotations since the device was provisioned): a device checks it with
        `medtwin.crypto.check_session_key` before it handshakes. New at every start of the
        site: a device whose frames answer `unknown-session` fetches it and handshakes
        again."""
        return pipeline.session_key_offer()

    @app.post("/v1/sessions", status_code=201, tags=["ingest"], responses={
        400: {"description": "Malformed"}, 401: {"description": "Unknown device, bad "
                                                              "signature, stale session key"},
        409: {"description": "Handshake already used"},
        429: {"description": "Rate-limited"}})
    async def open_session(request: Request) -> JSONResponse:
        """Open a device session from a handshake signed by the device's registered key and
        keyed by hybrid X25519+ML-KEM-768 (`medtwin.crypto.build_handshake`); then send
        AEAD frames to `/v1/session-packets`. The handshake is logged."""
        body, size = await _read_capped(request, MAX_HANDSHAKE_BYTES)
        envelope = decode_json(body) if size <= MAX_HANDSHAKE_BYTES else None
        handshake = envelope.get("handshake") if isinstance(envelope, dict) else None
        claimed = handshake.get("device_id") if isinstance(handshake, dict) else None
        address = address_of(request)
        [throttled] = limiter.take([claimed if isinstance(claimed, str) else None], address)
        if throttled is not None:
            return throttled_response(throttled)
        try:
            opened = await asyncio.to_thread(pipeline.open_session, envelope, size)
        except GateRejection as error:
            return JSONResponse({"status": "rejected", "reason": error.reason.value,
                                 "detail": str(error)},
                                status_code=_REJECTION_STATUS[error.reason])
        limiter.vouch(opened.device_id, address)
        return JSONResponse({"session_id": opened.session_id, "device_id": opened.device_id,
                             "expires_at_ms": opened.expires_at_ms,
                             "max_packets": opened.max_packets}, status_code=201)

    @app.post("/v1/session-packets", tags=["ingest"], responses={
        200: {"description": "Accepted and durable"},
        401: {"description": "Unknown or expired session, or a bad tag"},
        409: {"description": "Replayed sequence"}, 413: {"description": "Too large"},
        422: {"description": "Readings refused"}, 429: {"description": "Rate-limited"}})
    async def ingest_session_packet(request: Request) -> JSONResponse:
        """Ingest one session frame (binary: header, then the AEAD-sealed packet JSON);
        authenticated by the session's key, replay-protected by its sequence number."""
        body, size = await _read_capped(request, MAX_PACKET_BYTES)
        submission = SessionSubmission.from_bytes(body if size <= MAX_PACKET_BYTES else b"",
                                                  size)
        address = address_of(request)
        [throttled] = limiter.take([pipeline.gate.session_device(submission.frame)], address)
        if throttled is not None:
            return throttled_response(throttled)
        return _packet_answer(await batcher.submit(submission), limiter, address)

    @app.post("/v1/patients", status_code=201, tags=["admin"])
    def add_patient(body: PatientIn, _caller: Caller = manage) -> dict[str, Any]:
        """Register a patient (creates their data key); with `owner`, mint their twin's
        consent token to that address (required where the site requires consent)."""
        if consent is not None and body.owner is None:
            raise InvalidInputError("api: this site requires consent: give the patient's "
                                    "chain address as owner")
        pipeline.add_patient(body.patient_id)
        if consent is None or body.owner is None:
            return {"patient_id": body.patient_id}
        try:
            token_id = consent.mint(body.patient_id, body.owner)
        except ChainError as exc:
            raise ChainError(f"{exc}; the patient is registered: mint the token again with "
                             f"POST /v1/patients/{body.patient_id}/owner") from exc
        return {"patient_id": body.patient_id, "token_id": hex(token_id)}

    @app.post("/v1/patients/{patient_id}/owner", status_code=201, tags=["admin"])
    def mint_owner(patient_id: str, body: OwnerIn, _caller: Caller = manage) -> dict[str, Any]:
        """Mint a registered patient's consent token to their chain address (once)."""
        if consent is None:
            raise ConflictError("api: this site does not use consent tokens "
                                "(MEDTWIN_CONSENT=1 turns them on)")
        if patient_id not in pipeline.patients():
            raise NotFoundError(f"api: unknown patient {patient_id!r}")
        return {"patient_id": patient_id, "token_id": hex(consent.mint(patient_id, body.owner))}

    @app.post("/v1/patients/{patient_id}/erase", tags=["admin"])
    def erase_patient(patient_id: str, body: StatusIn, caller: Caller = manage
                      ) -> dict[str, Any]:
        """Erase a patient (crypto-shredding): their data key is destroyed, so their stored
        records can never be read again while the log still verifies. Logged with the
        caller's name and reason; later reads of the patient answer 410. `scrubbed`: the
        database's write-ahead log was emptied of the old key page at once (else at its
        next checkpoint)."""
        scrubbed = pipeline.erase_patient(patient_id, body.reason, caller.name)
        return {"patient_id": patient_id, "status": "erased", "scrubbed": scrubbed}

    @app.post("/v1/devices", status_code=201, tags=["admin"])
    def add_device(body: DeviceIn, _caller: Caller = manage) -> dict[str, str]:
        """Register a device and its public key to a patient."""
        try:
            key = base64.b64decode(body.public_key, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, "api: public_key must be base64") from None
        pipeline.add_device(Device(body.device_id, body.patient_id, body.suite, key))
        return {"device_id": body.device_id, "patient_id": body.patient_id}

    @app.post("/v1/devices/{device_id}/key", tags=["admin"])
    def rotate_device_key(device_id: str, body: DeviceKeyIn, caller: Caller = manage
                          ) -> dict[str, str]:
        """Give a device a new key (rotation, or a new suite), logged with the caller's name
        and reason; the old key signs nothing from now on and its sessions end."""
        try:
            key = base64.b64decode(body.public_key, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, "api: public_key must be base64") from None
        pipeline.rotate_device_key(device_id, body.suite, key, f"by {caller.name}: "
                                   f"{body.reason}")
        return {"device_id": device_id, "suite": body.suite}

    @app.post("/v1/keys/log", tags=["admin"])
    def rotate_log_key(body: LogKeyIn, caller: Caller = manage) -> dict[str, Any]:
        """Give the log a new signing key, without downtime: the outgoing key endorses it in
        a logged record (served at /v1/ledger/log-keys, which witnesses follow), and every
        checkpoint from that record on is signed by the new key."""
        record = pipeline.rotate_log_key(caller.name, body.reason, body.suite)
        return {"key_id": record.key_id, "suite": record.suite,
                "public_key": base64.b64encode(record.public_key).decode(),
                "previous_key_id": record.previous_key_id, "leaf_index": record.leaf_index}

    @app.post("/v1/keys/kek", status_code=202, tags=["admin"])
    def rotate_kek(body: KekIn, background: BackgroundTasks,
                   caller: Caller = manage) -> dict[str, Any]:
        """Rotate the site key-encryption key while serving: new data keys are wrapped by a
        fresh KEK at once (logged), and stored ones are re-wrapped in the background, one
        batch per hold of the pipeline lock (`pending` says how many are left to do)."""
        record = pipeline.start_rotation(caller.name, body.reason)
        background.add_task(pipeline.rewrap_patients)
        return {"old_kek_id": record.old_kek_id, "new_kek_id": record.new_kek_id,
                "suite": record.suite, "leaf_index": record.leaf_index,
                "pending": len(pipeline.pending_rewrap())}

    @app.get("/v1/devices", tags=["admin"])
    def list_devices(_caller: Caller = manage) -> list[dict[str, Any]]:
        """Registered devices, their patient, status and last accepted sequence number."""
        return [{"device_id": d.device_id, "patient_id": d.patient_id, "suite": d.suite,
                 "status": d.status.value, "last_seq": d.last_seq}
                for d in pipeline.devices()]

    @app.post("/v1/devices/{device_id}/quarantine", tags=["admin"])
    def quarantine_device(device_id: str, caller: Caller = manage,
                          body: StatusIn | None = None) -> dict[str, str]:
        """Quarantine a device: its packets are still stored, but no longer move the twin.
        Logged with the caller's name and reason."""
        reason = body.reason if body is not None else ""
        pipeline.set_device_status(device_id, DeviceStatus.QUARANTINED,
                                   f"quarantine by {caller.name}: {reason}".rstrip(": "))
        return {"device_id": device_id, "status": DeviceStatus.QUARANTINED.value}

    @app.post("/v1/devices/{device_id}/release", tags=["admin"])
    def release_device(device_id: str, body: StatusIn, caller: Caller = manage
                       ) -> dict[str, str]:
        """Release a quarantined device after checking it: an audited action (the caller's
        name and reason are logged); its readings move the twin again."""
        pipeline.release_device(device_id, f"by {caller.name}: {body.reason}")
        return {"device_id": device_id, "status": DeviceStatus.ACTIVE.value}

    @app.get("/v1/findings", tags=["twin"])
    def list_findings(caller: Caller = read_twin, patient_id: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100
                      ) -> dict[str, Any]:
        """Recent guard findings, newest first, each with its code, confidence and evidence
        (expected vs observed, statistic and threshold, since when, what would clear it)."""
        if patient_id is not None:
            consented(caller, patient_id)
        found = pipeline.findings(patient_id, limit)
        allowed = readable(caller, {f.patient_id for f in found})
        return {"findings": [finding_json(f) for f in found if f.patient_id in allowed]}

    @app.post("/v1/tokens", status_code=201, tags=["admin"])
    def create_token(body: TokenIn, _caller: Caller = manage) -> dict[str, str]:
        """Create a token for `name` with `role`; the token is shown only in this answer. Its
        holder binds it to their chain address themselves (`POST /v1/tokens/me/address`)."""
        token, token_hash = new_token()
        pipeline.store.add_token(token_hash, body.name, body.role.value, pipeline.clock())
        return {"name": body.name, "role": body.role.value, "token": token}

    @app.get("/v1/tokens/me/binding", tags=["access"])
    def address_binding(address: Address, _caller: Caller = read_twin,
                        token_hash: bytes = Depends(token_hash_of)) -> dict[str, str]:
        """The message to sign (EIP-191 `personal_sign`) with `address`'s key to bind the
        caller's token to that address: it names this site and this token."""
        return {"message": binding_message(pipeline.settings.log_origin, token_hash, address)}

    @app.post("/v1/tokens/me/address", tags=["access"])
    def bind_address(body: AddressIn, caller: Caller = read_twin,
                     token_hash: bytes = Depends(token_hash_of)) -> dict[str, Any]:
        """Bind the caller's token to a chain address it proves it controls (the signed
        binding message, logged with its signature); consent granted to that address then
        applies to its reads."""
        record = pipeline.bind_address(token_hash, caller.name, body.address,
                                       bytes.fromhex(body.signature[2:]))
        return {"name": caller.name, "address": body.address,
                "leaf_index": record.leaf_index}

    @app.delete("/v1/tokens/{name}", tags=["admin"])
    def revoke_tokens(name: str, _caller: Caller = manage) -> dict[str, Any]:
        """Revoke every token held by `name`; effective on the holder's next request."""
        return {"name": name, "revoked": pipeline.store.revoke_tokens(name)}

    @app.get("/v1/patients", tags=["twin"])
    def list_patients(caller: Caller = read_twin) -> list[dict[str, Any]]:
        """Every patient with their twin state (where consent is required: those whose
        patients granted the caller)."""
        states = pipeline.twin_states()
        allowed = readable(caller, {s.patient_id for s in states})
        return [twin_state_json(s) for s in states if s.patient_id in allowed]

    @app.get("/v1/patients/{patient_id}/twin", tags=["twin"])
    def get_twin(patient_id: str, caller: Caller = read_twin) -> dict[str, Any]:
        """One patient's twin: latest values and ages, estimates, NEWS2, active alerts."""
        consented(caller, patient_id)
        return twin_state_json(pipeline.twin_state(patient_id))

    @app.post("/v1/patients/{patient_id}/whatif", tags=["twin"])
    def whatif(patient_id: str, body: WhatIfIn, caller: Caller = read_twin) -> dict[str, Any]:
        """Simulate a future of meals and insulin from the patient's glucose twin now (e.g. a
        bolus scaled by 1.3, a skipped meal, a basal change) and return glucose (interstitial,
        the CGM's quantity) on a grid of `step_min`, with its 95 % interval. Nothing is
        stored or changed."""
        consented(caller, patient_id)
        steps = max(1, math.ceil(body.hours * 60.0 / body.step_min))
        if steps > MAX_WHATIF_STEPS:
            raise InvalidInputError(f"api: at most {MAX_WHATIF_STEPS} steps; use a longer "
                                    "step_min or fewer hours")
        carbs, insulin = np.zeros(steps), np.zeros(steps)
        for event in body.events:
            k = int(event.minutes // body.step_min)
            if k >= steps:
                raise InvalidInputError(f"api: an event at minute {event.minutes:g} is after "
                                        f"the {body.hours:g} h simulated; ask for more hours")
            carbs[k] += event.carbs_g
            insulin[k] += event.insulin_u
        insulin += body.basal_change_u_per_h * body.step_min / 60.0
        return whatif_json(pipeline.whatif(patient_id, body.step_min, carbs, insulin))

    @app.post("/v1/patients/{patient_id}/personalize", tags=["admin"])
    def personalize(patient_id: str, body: PersonalizeIn, caller: Caller = manage
                    ) -> dict[str, Any]:
        """Identify the patient's glucose twin from their last `days` of stored data, log the
        parameters and use them from now on (ConflictError without CGM data). It reads the
        patient's data: where consent is required, the admin needs the patient's grant."""
        consented(caller, patient_id)
        results = pipeline.personalize([patient_id], body.days)
        if not results:
            raise ConflictError(f"api: patient {patient_id!r} has no CGM data to personalize "
                                "from")
        r = results[0]
        return {"patient_id": r.patient_id, "leaf_index": r.leaf_index, "params": r.params,
                "uncertainty": r.uncertainty, "n_cgm": r.n_cgm}

    @app.get("/v1/alerts", tags=["twin"])
    def list_alerts(caller: Caller = read_twin, patient_id: str | None = None,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100
                          ) -> list[dict[str, Any]]:
        """Recent alerts, newest first, with their explanations."""
        if patient_id is not None:
            consented(caller, patient_id)
        found = pipeline.alerts(patient_id, limit)
        allowed = readable(caller, {a.patient_id for a in found})
        return [alert_json(a) for a in found if a.patient_id in allowed]

    @app.get("/v1/stream", tags=["twin"])
    async def stream(request: Request, caller: Caller = read_twin) -> StreamingResponse:
        """Server-sent events: `twin` on every update of a patient's twin, `alert` on alerts,
        `finding` on guard findings.
        The token is checked again every keep-alive interval, events or not, so a revoked
        token's stream ends; where consent is required, only granted patients' events are
        sent, re-decided as often."""
        granted = (None if consent is None else
                   await asyncio.to_thread(readable, caller, set(pipeline.patients())))
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        queue = pipeline.events.subscribe()

        async def still_allowed() -> bool:
            now = await asyncio.to_thread(caller_of, pipeline, token)
            return now is not None and allows(now.role, Permission.READ_TWIN)

        async def events() -> AsyncIterator[str]:
            nonlocal granted
            checked = time.monotonic()
            try:
                yield ": connected\n\n"
                while not await request.is_disconnected():
                    try:
                        event = await asyncio.wait_for(queue.get(), STREAM_KEEPALIVE_S)
                    except TimeoutError:
                        event = None
                    if time.monotonic() - checked >= STREAM_KEEPALIVE_S:
                        # whether events flow or not: the token and the grants again
                        checked = time.monotonic()
                        if not await still_allowed():
                            yield "event: end\ndata: {\"reason\": \"token revoked\"}\n\n"
                            return
                        if granted is not None:      # logged only when the answer changes
                            granted = await asyncio.to_thread(
                                readable, caller, set(pipeline.patients()), granted)
                    if event is None:
                        yield ": keep-alive\n\n"
                        continue
                    if granted is not None and _event_patient(event) not in granted:
                        continue
                    yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            finally:
                pipeline.events.unsubscribe(queue)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @app.get("/v1/throttled", tags=["audit"])
    def list_throttled(_caller: Caller = read_audit) -> dict[str, Any]:
        """Packets refused for their rate since the server started, per sender
        ("device:<id>" or "unregistered:<address>"): floods and rogue senders, which the log
        does not record one by one."""
        return {"senders": limiter.tracked(), "throttled": limiter.throttled()}

    @app.get("/v1/rejections", tags=["audit"])
    def list_rejections(_caller: Caller = read_audit,
                              limit: Annotated[int, Query(ge=1, le=1000)] = 100
                              ) -> list[dict[str, Any]]:
        """Recent gate rejections (never with readings)."""
        return [{"leaf_index": r.leaf_index, "received_at_ms": r.received_at_ms,
                 "device_id": r.device_id, "reason": r.reason, "detail": r.detail}
                for r in pipeline.store.rejections(limit)]

    @app.get("/v1/ledger/head", tags=["audit"])
    def ledger_head(_caller: Caller = read_audit) -> dict[str, Any]:
        """The latest signed tree head (checkpoint) of the log."""
        head = pipeline.store.latest_head()
        if head is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "api: the log is empty")
        return {"origin": head.origin, "size": head.size, "root": head.root.hex(),
                "timestamp_ms": head.timestamp_ms, "key_id": head.key_id, "suite": head.suite,
                "signature": base64.b64encode(head.signature).decode()}

    @app.get("/v1/access-decisions", tags=["audit"])
    def access_decisions(_caller: Caller = read_audit,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100
                         ) -> dict[str, Any]:
        """The latest consent-gated access decisions, newest first: who asked for which twin,
        for what purpose, the answer and why; each is a record of the Merkle log
        (`leaf_index`), so its inclusion can be proven and its removal is detected."""
        return {"decisions": pipeline.store.access_decisions(limit)}

    @app.get("/v1/verify", tags=["audit"])
    async def verify(_caller: Caller = read_audit) -> dict[str, Any]:
        """Recompute the log from the store and check it against the signed head."""
        report = await asyncio.to_thread(pipeline.verify)
        return {"ok": True, "records": report.records, "packets": report.packets,
                "alerts": report.alerts, "rejections": report.rejections,
                "registrations": report.registrations,
                "signatures_checked": report.signatures_checked, "pending": report.pending,
                "erasures": report.erasures, "unreadable": report.unreadable,
                "rotations": report.rotations, "sessions": report.sessions,
                "snapshots": report.snapshots, "accesses": report.accesses,
                "suite_changes": report.suite_changes,
                "kek_retirements": report.kek_retirements,
                "token_bindings_checked": report.token_bindings_checked,
                "log_key_rotations": report.log_key_rotations,
                "log_key_id": report.log_key_id, "root": report.root_hex}

    app.include_router(ledger_router(pipeline))
    return app
