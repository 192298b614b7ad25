"""The FastAPI app: packet ingestion, patients and twins, alerts, audit, and a live stream."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from medtwin.access import Permission
from medtwin.api._auth import Caller, require
from medtwin.api._batcher import IngestBatcher
from medtwin.config import MAX_PACKET_BYTES
from medtwin.crypto import SIGNATURE_SUITES
from medtwin.domain import Device, RejectReason
from medtwin.errors import ConflictError, MedtwinError, NotFoundError
from medtwin.ingest import MAX_ID_LENGTH
from medtwin.pipeline import Accepted, Pipeline, alert_json, twin_state_json, verify_store

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
}

IdStr = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH,
                             pattern=r"^[A-Za-z0-9._:-]+$")]


class PatientIn(BaseModel):
    patient_id: IdStr


class DeviceIn(BaseModel):
    device_id: IdStr
    patient_id: IdStr
    suite: str = "ed25519"
    public_key: str = Field(description="The device's raw public key, base64")


def create_app(pipeline: Pipeline) -> FastAPI:
    """The API of one site, serving `pipeline`."""
    batcher = IngestBatcher(pipeline, pipeline.settings.max_batch)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="medtwin", version="0.1.0", lifespan=lifespan,
                  description="Secure digital twin kernel: signed device packets in; twin "
                              "states, alerts and a verifiable log out.")
    app.state.pipeline = pipeline
    read_twin = Depends(require(Permission.READ_TWIN))
    read_audit = Depends(require(Permission.READ_AUDIT))
    manage = Depends(require(Permission.MANAGE))

    @app.exception_handler(MedtwinError)
    async def medtwin_error(_request: Request, exc: MedtwinError) -> JSONResponse:
        code = 404 if isinstance(exc, NotFoundError) else 409 if isinstance(
            exc, ConflictError) else 500
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, str]:
        """Liveness probe; needs no token."""
        return {"status": "ok"}

    @app.post("/v1/packets", tags=["ingest"], responses={
        200: {"description": "Accepted and durable"},
        400: {"description": "Malformed"}, 401: {"description": "Unknown device or bad signature"},
        403: {"description": "Device quarantined"}, 409: {"description": "Replayed sequence"},
        413: {"description": "Too large"}, 422: {"description": "Readings refused"}})
    async def ingest_packet(request: Request) -> JSONResponse:
        """Ingest one signed device packet; authenticated by the device's signature, not a
        token. Answers only once the packet (or its rejection) is durable."""
        body = await request.body()
        envelope: Any = None
        if len(body) <= MAX_PACKET_BYTES:
            try:
                envelope = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                envelope = None
        outcome = await batcher.submit(envelope, len(body))
        if isinstance(outcome, Accepted):
            return JSONResponse({"status": "accepted", "leaf_index": outcome.leaf_index,
                                 "device_id": outcome.device_id, "seq": outcome.seq,
                                 "readings": outcome.n_readings})
        error = outcome.error
        return JSONResponse({"status": "rejected", "reason": error.reason.value,
                             "detail": str(error), "leaf_index": outcome.leaf_index},
                            status_code=_REJECTION_STATUS[error.reason])

    @app.post("/v1/patients", status_code=201, tags=["admin"])
    async def add_patient(body: PatientIn, _caller: Caller = manage) -> dict[str, str]:
        """Register a patient (creates their data key)."""
        pipeline.add_patient(body.patient_id)
        return {"patient_id": body.patient_id}

    @app.post("/v1/devices", status_code=201, tags=["admin"])
    async def add_device(body: DeviceIn, _caller: Caller = manage) -> dict[str, str]:
        """Register a device and its public key to a patient."""
        if body.suite not in SIGNATURE_SUITES:
            raise HTTPException(422, f"api: suite must be one of {sorted(SIGNATURE_SUITES)}")
        try:
            key = base64.b64decode(body.public_key, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, "api: public_key must be base64") from None
        pipeline.add_device(Device(body.device_id, body.patient_id, body.suite, key))
        return {"device_id": body.device_id, "patient_id": body.patient_id}

    @app.get("/v1/devices", tags=["admin"])
    async def list_devices(_caller: Caller = manage) -> list[dict[str, Any]]:
        """Registered devices, their patient, status and last accepted sequence number."""
        return [{"device_id": d.device_id, "patient_id": d.patient_id, "suite": d.suite,
                 "status": d.status.value, "last_seq": d.last_seq}
                for d in pipeline.devices()]

    @app.get("/v1/patients", tags=["twin"])
    async def list_patients(_caller: Caller = read_twin) -> list[dict[str, Any]]:
        """Every patient with their twin state."""
        return [twin_state_json(s) for s in pipeline.twin_states()]

    @app.get("/v1/patients/{patient_id}/twin", tags=["twin"])
    async def get_twin(patient_id: str, _caller: Caller = read_twin) -> dict[str, Any]:
        """One patient's twin: latest values and ages, estimates, NEWS2, active alerts."""
        return twin_state_json(pipeline.twin_state(patient_id))

    @app.get("/v1/alerts", tags=["twin"])
    async def list_alerts(_caller: Caller = read_twin, patient_id: str | None = None,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100
                          ) -> list[dict[str, Any]]:
        """Recent alerts, newest first, with their explanations."""
        return [alert_json(a) for a in pipeline.alerts(patient_id, limit)]

    @app.get("/v1/stream", tags=["twin"])
    async def stream(request: Request, _caller: Caller = read_twin) -> StreamingResponse:
        """Server-sent events: `twin` on every update of a patient's twin, `alert` on alerts."""
        queue = pipeline.events.subscribe()

        async def events() -> AsyncIterator[str]:
            try:
                yield ": connected\n\n"
                while not await request.is_disconnected():
                    try:
                        event = await asyncio.wait_for(queue.get(), STREAM_KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            finally:
                pipeline.events.unsubscribe(queue)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @app.get("/v1/rejections", tags=["audit"])
    async def list_rejections(_caller: Caller = read_audit,
                              limit: Annotated[int, Query(ge=1, le=1000)] = 100
                              ) -> list[dict[str, Any]]:
        """Recent gate rejections (never with readings)."""
        return [{"leaf_index": r.leaf_index, "received_at_ms": r.received_at_ms,
                 "device_id": r.device_id, "reason": r.reason, "detail": r.detail}
                for r in pipeline.store.rejections(limit)]

    @app.get("/v1/ledger/head", tags=["audit"])
    async def ledger_head(_caller: Caller = read_audit) -> dict[str, Any]:
        """The latest signed tree head (checkpoint) of the log."""
        head = pipeline.store.latest_head()
        if head is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "api: the log is empty")
        return {"origin": head.origin, "size": head.size, "root": head.root.hex(),
                "timestamp_ms": head.timestamp_ms, "key_id": head.key_id, "suite": head.suite,
                "signature": base64.b64encode(head.signature).decode()}

    @app.get("/v1/verify", tags=["audit"])
    async def verify(_caller: Caller = read_audit) -> dict[str, Any]:
        """Recompute the log from the store and check it against the signed head."""
        report = await asyncio.to_thread(verify_store, pipeline.store, pipeline.keys.log_key)
        return {"ok": True, "records": report.records, "packets": report.packets,
                "alerts": report.alerts, "rejections": report.rejections,
                "root": report.root_hex}

    return app
