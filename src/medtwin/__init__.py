"""medtwin: a secure digital twin kernel for healthcare."""

__version__ = "0.1.0"
