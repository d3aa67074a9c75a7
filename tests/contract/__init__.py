"""
Interface suites: behaviour stated once, run against a fake adapter in the
unit tests and against the real thing on the testbed.
"""
