"""Proof that an API token's holder controls a chain address: an EIP-191 signature, by that
address's key, of a message naming the site and the token (by its hash).

Consent is granted to addresses; binding a token to an address nobody proved they hold would
let whoever sets it read as that grantee. The message names the site's log origin and the
token's SHA-256, so a signature can be replayed neither to another site nor to another token.
"""

from __future__ import annotations

from medtwin.errors import ConfigError, InvalidInputError

#: First line of every binding message, so it cannot be mistaken for any other signed text.
BINDING_HEADER = "medtwin: bind this API token to my chain address"


def binding_message(origin: str, token_hash: bytes, address: str) -> str:
    """The text the address's key signs (EIP-191 `personal_sign`)."""
    return (f"{BINDING_HEADER}\nsite: {origin}\ntoken: sha256:{token_hash.hex()}\n"
            f"address: {address}\n")


def check_binding(origin: str, token_hash: bytes, address: str, signature: bytes) -> None:
    """Raise InvalidInputError unless `signature` over the binding message was made by the key
    of `address` (compared checksum-insensitively)."""
    try:
        from eth_account import Account
        from eth_account.messages import encode_defunct
        from eth_keys.exceptions import BadSignature
        from eth_utils.exceptions import ValidationError
    except ImportError as exc:
        raise ConfigError("consent: checking an address binding needs the chain extra: "
                          "pip install 'medtwin[chain]'") from exc

    message = encode_defunct(text=binding_message(origin, token_hash, address))
    try:
        signer = Account.recover_message(message, signature=signature)
    except (BadSignature, ValidationError, ValueError) as exc:
        raise InvalidInputError("consent: the signature is not a 65-byte EIP-191 signature "
                                "of the binding message") from exc
    if signer.lower() != address.lower():
        raise InvalidInputError(f"consent: the binding message was signed by {signer}, not by "
                                f"{address}: sign it with that address's key")
