"""Small things many tests need."""

import shutil
import tempfile


def temp_dir(testcase, prefix: str = "comet-test-") -> str:
    """A new directory that is removed, with its contents, when the test ends."""
    directory = tempfile.mkdtemp(prefix=prefix)
    testcase.addCleanup(shutil.rmtree, directory, True)
    return directory


def http():
    """A treq client that keeps no connection open after a request (a clean reactor)."""
    import treq
    from twisted.internet import reactor
    from twisted.web.client import Agent, HTTPConnectionPool

    return treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


def bearer(token: str) -> dict:
    """The C{Authorization} header of an API token, as treq takes headers."""
    return {b"Authorization": [f"Bearer {token}".encode("ascii")]}
