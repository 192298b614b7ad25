# pragma version 0.4.3
"""
@title medtwin checkpoint anchor
@notice Records the signed tree heads (checkpoints) of one medtwin transparency log: for
        each anchored tree size, the log's root hash and the hash of the signed note. Only
        the log's anchoring key may anchor; a size is anchored once, and sizes only grow,
        so the chain holds one append-only history of the log that anyone can check.
        Nothing here is patient data: a root commits to ciphertext and salted commitments.
"""

event Anchored:
    size: indexed(uint256)
    root: bytes32
    note_hash: bytes32
    anchored_at: uint256

#: The key allowed to anchor (medtwin's chain key).
anchorer: public(address)
#: The log's origin line (C2SP checkpoint), hashed: which log this contract anchors.
origin_hash: public(bytes32)
#: Root hash anchored for a tree size (zero: not anchored).
roots: public(HashMap[uint256, bytes32])
#: SHA-256 of the checkpoint note anchored for a tree size.
note_hashes: public(HashMap[uint256, bytes32])
#: Block timestamp of each anchor.
anchored_at: public(HashMap[uint256, uint256])
#: The largest tree size anchored so far.
latest_size: public(uint256)
#: How many checkpoints are anchored, and which sizes, in order.
count: public(uint256)
sizes: public(HashMap[uint256, uint256])


@deploy
def __init__(origin_hash: bytes32):
    self.anchorer = msg.sender
    self.origin_hash = origin_hash


@external
def anchor(size: uint256, root: bytes32, note_hash: bytes32):
    """
    @notice Anchor the checkpoint of tree size `size`.
    """
    assert msg.sender == self.anchorer, "only the log's anchoring key may anchor"
    assert size > self.latest_size or (size == 0 and self.count == 0), "size must grow"
    self.roots[size] = root
    self.note_hashes[size] = note_hash
    self.anchored_at[size] = block.timestamp
    self.latest_size = size
    self.sizes[self.count] = size
    self.count += 1
    log Anchored(size=size, root=root, note_hash=note_hash, anchored_at=block.timestamp)
