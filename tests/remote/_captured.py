"""Output captured from the testbed's servers (OpenZFS 2.1.11, tgt), see C{data/manifest.json}."""

import os

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
#: The dataset the ZFS captures were made under.
TOP = "tank/comet-test-capture"


def fixture(name: str) -> bytes:
    """The bytes of one captured file."""
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()
