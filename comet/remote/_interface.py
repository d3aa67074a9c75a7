"""
What every way of running commands on a storage server offers: the real
L{comet.remote.SSHRunner} and the fakes beside it.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IRunner(Interface):
    """
    Runs commands, given as argument lists, on one storage server.

    Failures are domain errors: L{comet.errors.CommandFailed} when the
    command ran and exited non-zero, L{comet.errors.Unavailable} when the
    server could not be reached or did not answer in time,
    L{comet.errors.InvalidInput} (synchronously, before anything runs) for an
    argument list that cannot be run.
    """

    host = Attribute("The storage server's address, as the configuration names it.")

    def run(argv, stdin=None, timeout=None):
        """
        Run C{argv} to completion.

        @param argv: the command, a list of L{str}.
        @param stdin: L{bytes} for its standard input, or L{None} for none
            (standard input is closed at once).
        @param timeout: seconds the whole command may take, or L{None} for
            the configured default.
        @return: a L{Deferred} firing with its standard output (L{bytes}).
        """

    def run_stream(argv, timeout=None, output=None):
        """
        Start C{argv} with a standard input that is fed while it runs.

        @param timeout: seconds the whole command may take, or L{None} for no
            limit (a transfer of many gigabytes takes as long as it takes).
        @param output: L{None} to collect standard output (as L{run} does),
            or an L{twisted.internet.interfaces.IConsumer} that is given it
            as it comes; a streaming producer is registered on it, and while
            the consumer keeps it paused the command's output is not read (so
            the remote command waits).  It is unregistered when the command
            ends, and the result is then C{b""}.
        @return: an L{IStreamingCommand}, already started.
        """

    def stop():
        """
        Kill every command still running and close shared connections; later
        calls to L{run} fail with L{comet.errors.Unavailable}.

        @return: a L{Deferred} that fires once all of that is done.
        """


class IStreamingCommand(Interface):
    """
    A running command whose standard input is written piece by piece, with
    flow control: the writer waits whenever the pipe to the command is full,
    so that an image of any size streams through a small, bounded buffer.

    It is also an L{twisted.internet.interfaces.IConsumer}: a streaming
    (push) producer registered on it, such as an HTTP response body, is
    paused and resumed with the pipe.
    """

    def when_done():
        """
        @return: a new L{Deferred} that fires with the command's standard
            output (L{bytes}) when it exits with status 0, or fails like
            L{IRunner.run} does (L{twisted.internet.defer.CancelledError}
            after L{abort}).
        """

    def write(data):
        """
        Send C{data} (L{bytes}) to the command's standard input.

        @return: a L{Deferred} that fires (with L{None}) when the command can
            take more; it has already fired when the pipe is not full.  It
            fails with the command's error if the command ends first.
        """

    def finish():
        """
        Close standard input and wait for the command to exit.

        @return: L{when_done}C{()}.
        """

    def abort():
        """
        Kill the command (SIGTERM, then SIGKILL).

        @return: L{when_done}C{()}, which fails with
            L{twisted.internet.defer.CancelledError} unless the command had
            already ended.
        """

    def registerProducer(producer, streaming):
        """Pause and resume C{producer} as the pipe fills and drains (push only)."""

    def unregisterProducer():
        """Forget the producer registered with L{registerProducer}."""
