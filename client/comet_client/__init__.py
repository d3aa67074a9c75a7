"""
C{comet}: the command-line client of a Comet daemon's HTTP API.

It depends on nothing of the daemon.  Modules: L{settings} (the login kept
in the user's config directory), L{api} (HTTP, errors as exceptions),
L{follow} (waiting for a task), L{output} (tables and JSON), L{console}
(the serial console in a terminal), L{cli} (the commands).
"""

__version__ = "0.1.0"
