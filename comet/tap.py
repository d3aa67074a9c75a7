"""The command line of C{twistd comet}: its options and the service they make."""

from twisted.python import usage

from comet.service import makeService as _makeService


class Options(usage.Options):
    """C{twistd comet --config FILE}; without a file, the embedded default."""

    optParameters = [
        ["config", "c", None, "The TOML configuration file (default: the embedded default)."],
    ]


def makeService(options: Options):
    return _makeService(options["config"], whole_process=True)
