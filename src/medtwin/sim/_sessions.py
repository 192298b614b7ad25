"""A virtual high-rate device that opens a session and sends AEAD frames instead of signatures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medtwin.crypto import SESSION_KEM_SUITE, SessionSender, build_handshake
from medtwin.domain import Reading, packet_wire
from medtwin.errors import InvalidInputError
from medtwin.sim._devices import VirtualDevice


class SessionDevice(VirtualDevice):
    """A device (an ECG patch, a bedside monitor) that handshakes once with its signing key,
    then seals each packet in the session; it can still sign packets, sharing one `seq`."""

    def __init__(self, device_id: str, patient_id: str, suite: str = "ed25519",
                 aead: str = "aes-256-gcm", kem: str = SESSION_KEM_SUITE) -> None:
        super().__init__(device_id, patient_id, suite)
        self.aead = aead
        self.kem = kem
        self.session: SessionSender | None = None

    def handshake(self, site_public_key: bytes, now_ms: int) -> dict[str, Any]:
        """A signed handshake towards the site's session key; later frames use its session."""
        envelope, self.session = build_handshake(self.device_id, self.suite, self._private_key,
                                                 site_public_key, now_ms, kem=self.kem,
                                                 aead=self.aead)
        return envelope

    def frame(self, readings: Sequence[Reading], sent_at_ms: int) -> bytes:
        """The session frame of the next packet carrying `readings`."""
        if self.session is None:
            raise InvalidInputError("sim: open a session (`handshake`) before sending frames")
        frame = self.session.seal(packet_wire(self.device_id, self.seq, sent_at_ms, readings))
        self.seq += 1
        return frame
