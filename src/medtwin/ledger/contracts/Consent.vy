# pragma version 0.4.3
"""
@title medtwin consent tokens
@notice One ownership token per patient twin (ERC-721 style), held by the patient's key.
        The owner grants a grantee (clinician, hospital, researcher) access for a purpose
        until an expiry, and revokes it; every change is an event, so a site keeps its view
        of consent from the events alone. A token id is a keyed hash (HMAC-SHA-256 under the
        site's token key) of the patient's pseudonymous id, so nobody outside the site can
        link a token to a patient; a purpose is short ASCII (e.g. "treatment")
        left-aligned in a bytes32: nothing here is patient data.
@dev    Only the site's registrar (the deployer) mints; only a token's owner transfers it,
        grants or revokes. Grants belong to the token, so they survive a transfer and the new
        owner may revoke them. There is no approve: nobody acts for an owner.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    token_id: indexed(uint256)

event Granted:
    token_id: indexed(uint256)
    grantee: indexed(address)
    purpose: indexed(bytes32)
    expires_at: uint256

event Revoked:
    token_id: indexed(uint256)
    grantee: indexed(address)
    purpose: indexed(bytes32)

#: The collection's name and symbol (ERC-721 metadata).
name: public(constant(String[32])) = "medtwin consent"
symbol: public(constant(String[8])) = "MTC"

#: The site key allowed to mint (the deployer).
registrar: public(address)
#: Owner of each minted token (empty: not minted).
_owners: HashMap[uint256, address]
#: How many tokens each address owns.
_balances: HashMap[address, uint256]
#: Expiry (unix seconds) of each grant: token -> grantee -> purpose (zero: none).
expires_at: public(HashMap[uint256, HashMap[address, HashMap[bytes32, uint256]]])


@deploy
def __init__():
    self.registrar = msg.sender


@view
@external
def ownerOf(token_id: uint256) -> address:
    """
    @notice The owner of a minted token; reverts for a token that was never minted.
    """
    owner: address = self._owners[token_id]
    assert owner != empty(address), "no such token: mint the twin's token first"
    return owner


@view
@external
def balanceOf(owner: address) -> uint256:
    """
    @notice How many tokens `owner` holds.
    """
    assert owner != empty(address), "the zero address owns nothing"
    return self._balances[owner]


@external
def mint(receiver: address, token_id: uint256):
    """
    @notice Mint the token of one patient twin to the patient's key; registrar only.
    """
    assert msg.sender == self.registrar, "only the site's registrar may mint"
    assert receiver != empty(address), "mint to the patient's address, not zero"
    assert self._owners[token_id] == empty(address), "token already minted"
    self._owners[token_id] = receiver
    self._balances[receiver] += 1
    log Transfer(sender=empty(address), receiver=receiver, token_id=token_id)


@external
def transferFrom(sender: address, receiver: address, token_id: uint256):
    """
    @notice Move a token to another key of its owner's choosing (a new wallet, a guardian);
            only the owner may, and grants stay with the token.
    """
    owner: address = self._owners[token_id]
    assert owner != empty(address), "no such token: mint the twin's token first"
    assert msg.sender == owner, "only the token's owner may transfer it"
    assert sender == owner, "sender is not the token's owner"
    assert receiver != empty(address), "transfer to an address, not zero"
    assert receiver != self, "this contract cannot hold tokens"
    self._owners[token_id] = receiver
    self._balances[sender] -= 1
    self._balances[receiver] += 1
    log Transfer(sender=sender, receiver=receiver, token_id=token_id)


@external
def grant(token_id: uint256, grantee: address, purpose: bytes32, expires_at: uint256):
    """
    @notice Give `grantee` access to the twin for `purpose` until `expires_at` (unix s,
            exclusive); replaces an earlier grant of the same grantee and purpose.
    """
    assert msg.sender == self._owners[token_id], "only the token's owner may grant"
    assert grantee != empty(address), "grant to an address, not zero"
    assert purpose != empty(bytes32), "name a purpose"
    assert expires_at > block.timestamp, "the expiry must be in the future"
    self.expires_at[token_id][grantee][purpose] = expires_at
    log Granted(token_id=token_id, grantee=grantee, purpose=purpose, expires_at=expires_at)


@external
def revoke(token_id: uint256, grantee: address, purpose: bytes32):
    """
    @notice Withdraw the grant of `grantee` for `purpose`, effective at once.
    """
    assert msg.sender == self._owners[token_id], "only the token's owner may revoke"
    assert self.expires_at[token_id][grantee][purpose] != 0, "no such grant"
    self.expires_at[token_id][grantee][purpose] = 0
    log Revoked(token_id=token_id, grantee=grantee, purpose=purpose)


@view
@external
def is_granted(token_id: uint256, grantee: address, purpose: bytes32) -> bool:
    """
    @notice Whether `grantee` may access the twin for `purpose` now (block time).
    """
    return block.timestamp < self.expires_at[token_id][grantee][purpose]
