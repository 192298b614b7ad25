"""Log key rotation endorsements: the outgoing key signs the new one; any change to the
statement, a wrong signer or a wrong previous key is refused; witnesses follow a chain."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtwin.crypto import (
    LogKeyEndorsement,
    LogSigningKey,
    PublicLogKey,
    check_endorsement,
    endorse_log_key,
    follow_log_key,
    signature_suite,
)
from medtwin.errors import SignatureError

ORIGIN = "hospital.example/log"


def _key(suite: str = "ed25519", name: str = "k") -> LogSigningKey:
    private, public = signature_suite(suite).generate()
    return LogSigningKey(name, suite, private, public)


def _chain(n: int, suites: tuple[str, ...] = ("ed25519",)) -> tuple[list[LogSigningKey],
                                                                      list[LogKeyEndorsement]]:
    keys = [_key(suites[i % len(suites)], f"log-{i}") for i in range(n + 1)]
    endorsements = [endorse_log_key(keys[i], keys[i + 1].public, ORIGIN, 10 * (i + 1),
                                    1_000 * i, f"ticket {i}") for i in range(n)]
    return keys, endorsements


@pytest.mark.parametrize("suite", ["ed25519", "ecdsa-p256", "ml-dsa-65"])
def test_an_endorsement_verifies_with_the_outgoing_key_of_any_suite(suite: str) -> None:
    old, new = _key(suite, "old"), _key("ml-dsa-65", "new")
    endorsement = endorse_log_key(old, new.public, ORIGIN, 7, 123, "by ops: ticket 9")
    check_endorsement(old.public, endorsement)
    with pytest.raises(SignatureError, match="not by the key in force"):
        check_endorsement(new.public, endorsement)


_FIELDS = st.sampled_from(["origin", "leaf_index", "key", "time_ms", "reason", "signature"])


@settings(max_examples=40, deadline=None)
@given(field=_FIELDS, data=st.data())
def test_any_change_to_a_signed_rotation_is_refused(field: str, data: st.DataObject) -> None:
    old, new = _key(name="old"), _key(name="new")
    endorsement = endorse_log_key(old, new.public, ORIGIN, 7, 123, "ticket 9")
    changed: object
    if field == "origin":
        changed = data.draw(st.text(min_size=1, max_size=20).filter(lambda o: o != ORIGIN))
    elif field in ("leaf_index", "time_ms"):
        value = getattr(endorsement, field)
        changed = data.draw(st.integers(0, 2**40).filter(lambda v: v != value))
    elif field == "reason":
        changed = data.draw(st.text(max_size=30).filter(lambda r: r != "ticket 9"))
    elif field == "key":
        changed = _key(name="attacker").public
    else:
        i = data.draw(st.integers(0, len(endorsement.signature) - 1))
        bit = data.draw(st.integers(0, 7))
        flipped = bytearray(endorsement.signature)
        flipped[i] ^= 1 << bit
        changed = bytes(flipped)
    forged = dataclasses.replace(endorsement, **{field: changed})
    with pytest.raises(SignatureError):
        check_endorsement(old.public, forged)


def test_the_statement_and_leaf_commitment_bind_every_field() -> None:
    old, new = _key(name="old"), _key(name="new")
    endorsement = endorse_log_key(old, new.public, ORIGIN, 7, 123, "ticket 9")
    other = dataclasses.replace(endorsement, reason="ticket 10")
    assert endorsement.statement() != other.statement()
    assert endorsement.commit_bytes() != other.commit_bytes()
    assert b"medtwin/log-key-rotation/v1" in endorsement.statement()


def test_a_witness_follows_a_chain_of_rotations_from_its_pinned_key() -> None:
    keys, endorsements = _chain(3, ("ed25519", "ml-dsa-65"))
    pinned = PublicLogKey("pinned", keys[0].suite, keys[0].public_key)
    key, followed = follow_log_key(pinned, list(reversed(endorsements)), ORIGIN)
    assert key.same_key(keys[3].public)
    assert followed == endorsements
    # a witness that already trusts key 2 skips the rotations before it
    key, followed = follow_log_key(keys[2].public, endorsements, ORIGIN)
    assert key.same_key(keys[3].public) and followed == endorsements[2:]
    # nothing starts from an unrelated key
    stranger = _key().public
    assert follow_log_key(stranger, endorsements, ORIGIN) == (stranger, [])


def test_a_break_in_the_chain_or_another_log_is_refused() -> None:
    keys, endorsements = _chain(3)
    rogue = _key(name="rogue")
    forged = endorse_log_key(rogue, _key(name="evil").public, ORIGIN, 25, 0, "forged")
    with pytest.raises(SignatureError, match="not by the key in force"):
        follow_log_key(keys[0].public, [*endorsements[:2], forged], ORIGIN)
    with pytest.raises(SignatureError, match="names log"):
        follow_log_key(keys[0].public, endorsements, "other.example/log")
