"""Transparency-log endpoints: the checkpoint as a signed note, proofs, witness cosignatures.

The note is signed here, at the edge, with the site's log key; the ledger functions it calls
are pure. Proofs come from a tile index per router, extended on each request by the leaves
logged since (O(log n) per proof). Everything served is hashes and sizes of the log, never
patient data.
"""

from __future__ import annotations

import base64
import binascii
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response, status
from pydantic import BaseModel, Field

from medtwin.access import Caller, Permission
from medtwin.api._auth import require
from medtwin.errors import VerificationError
from medtwin.ledger import (
    NoteVerifier,
    TileIndex,
    checkpoint_body,
    consistency_proof_from,
    cosignature_key_name,
    inclusion_proof_from,
    verify_cosignature,
)
from medtwin.pipeline import Pipeline
from medtwin.store import HeadRecord

#: Longest cosignature line accepted (an Ed25519 cosignature/v1 line is ~100 bytes plus the
#: key name; an ML-DSA-65 one about 4,430).
MAX_COSIGNATURE_LINE = 8192
#: Media type of a C2SP signed note.
NOTE_MEDIA_TYPE = "text/plain; charset=utf-8"


class CosignatureIn(BaseModel):
    """A witness's cosignature/v1 line and the checkpoint (size, base64 root) it is for."""

    size: Annotated[int, Field(ge=0)]
    root: Annotated[str, Field(min_length=1, max_length=64)]
    cosignature: Annotated[str, Field(min_length=1, max_length=MAX_COSIGNATURE_LINE)]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bad_request(message: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, message)


def ledger_router(pipeline: Pipeline) -> APIRouter:
    """The `/v1/ledger/...` endpoints of the site served by `pipeline` (role: read-audit)."""
    router = APIRouter(tags=["audit"])
    read_audit = Depends(require(Permission.READ_AUDIT))
    witnesses = {w.name: NoteVerifier(w.name, w.suite, w.public_key, cosigner=True)
                 for w in pipeline.settings.witnesses}
    tiles = TileIndex(pipeline.store.leaf_hashes)
    extending = threading.Lock()

    def synced_tiles() -> TileIndex:
        """The router's tile index, extended by the leaves logged since the last request."""
        with extending:
            tiles.extend(pipeline.store.leaf_hashes(tiles.size))
        return tiles

    def signed_head() -> HeadRecord:
        head = pipeline.store.latest_head()
        if head is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "api: the log is empty")
        return head

    def within_head(size: int, head: HeadRecord, what: str) -> None:
        if size > head.size:
            raise _bad_request(f"api: {what} {size} is beyond the latest signed tree head "
                               f"(size {head.size}); ask for a size of at most {head.size}")

    @router.get("/v1/ledger/checkpoint", response_class=Response, responses={
        200: {"content": {"text/plain": {}},
              "description": "C2SP tlog-checkpoint signed note"}})
    def checkpoint(_caller: Caller = read_audit) -> Response:
        """The latest checkpoint as a C2SP signed note by the site's log key (key name = the
        origin), followed by every stored witness cosignature of that exact checkpoint."""
        latest = pipeline.checkpoint_note()
        if latest is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "api: the log is empty")
        head, note = latest
        lines = pipeline.store.cosignatures(head.origin, head.size, head.root)
        return Response(note + "".join(lines), media_type=NOTE_MEDIA_TYPE,
                        headers={"Cache-Control": "no-store"})

    @router.get("/v1/ledger/proof/inclusion")
    def proof_inclusion(index: int, size: int, _caller: Caller = read_audit) -> dict[str, Any]:
        """RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves (at most the
        signed head's size), with the leaf hash; hashes in base64."""
        head = signed_head()
        within_head(size, head, "size")
        if not 0 <= index < size:
            raise _bad_request(f"api: leaf index {index} is outside a tree of size {size}; "
                               "ask for 0 <= index < size")
        proof = inclusion_proof_from(synced_tiles(), index, size)
        (leaf,) = pipeline.store.leaf_hashes(index, index + 1)
        return {"index": index, "size": size, "leaf_hash": _b64(leaf),
                "proof": [_b64(p) for p in proof]}

    @router.get("/v1/ledger/proof/consistency")
    def proof_consistency(old: int, new: int, _caller: Caller = read_audit) -> dict[str, Any]:
        """RFC 9162 consistency proof from the tree of `old` leaves to that of `new` (at most
        the signed head's size); hashes in base64."""
        head = signed_head()
        within_head(new, head, "new size")
        if not 0 <= old <= new:
            raise _bad_request(f"api: sizes old={old}, new={new} are not a range; ask for "
                               "0 <= old <= new")
        proof = consistency_proof_from(synced_tiles(), old, new)
        return {"old": old, "new": new, "proof": [_b64(p) for p in proof]}

    @router.post("/v1/ledger/cosignature", responses={
        400: {"description": "Not a valid cosignature of that checkpoint"},
        403: {"description": "The witness is not registered with this site"},
        409: {"description": "Not the latest checkpoint: fetch it again and cosign that"}})
    def cosignature(body: CosignatureIn, caller: Caller = read_audit) -> dict[str, Any]:
        """Store a registered witness's cosignature/v1 line of the latest checkpoint, once it
        verifies; it is served with the checkpoint from then on."""
        head = signed_head()
        try:
            root = base64.b64decode(body.root, validate=True)
        except (binascii.Error, ValueError):
            raise _bad_request("api: root must be base64") from None
        if (body.size, root) != (head.size, head.root):
            raise HTTPException(status.HTTP_409_CONFLICT,
                                f"api: the cosignature is for size {body.size}, but the latest "
                                f"checkpoint is size {head.size} root {_b64(head.root)}; "
                                "fetch it again and cosign that")
        line = body.cosignature if body.cosignature.endswith("\n") else body.cosignature + "\n"
        try:
            name = cosignature_key_name(line)
        except VerificationError as exc:
            raise _bad_request(f"api: {exc}") from exc
        witness = witnesses.get(name)
        if witness is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"api: witness {name!r} is not registered with this site; "
                                "add it to MEDTWIN_WITNESSES (name=base64 key, or "
                                "name=ml-dsa-65:base64 key)")
        try:
            timestamp_s = verify_cosignature(checkpoint_body(head.origin, head.size, head.root),
                                             line, witness)
        except VerificationError as exc:
            raise _bad_request(f"api: cosignature by {name} does not verify: {exc}") from exc
        pipeline.store.put_cosignature(head.origin, head.size, head.root, name, line,
                                       timestamp_s, pipeline.clock())
        return {"witness": name, "size": head.size, "timestamp_s": timestamp_s,
                "submitted_by": caller.name}

    @router.get("/v1/ledger/log-keys")
    def log_keys(_caller: Caller = read_audit) -> list[dict[str, object]]:
        """Every rotation of the log's signing key, oldest first: each is signed by the key it
        replaced and logged at `leaf_index`, so a witness or verifier that trusts one key can
        follow to the current one (and check each rotation's inclusion in the log)."""
        return [record.endorsement().as_json() for record in pipeline.log_key_rotations()]

    return router
