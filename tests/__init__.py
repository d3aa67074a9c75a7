"""
Tests of Comet.

Hypothesis's per-example deadline is a timed assertion: on a loaded shared
machine it fails tests that are correct.  It is off for every property test
(trial and pytest both import this package first).
"""

from hypothesis import settings

settings.register_profile("comet", deadline=None)
settings.load_profile("comet")
