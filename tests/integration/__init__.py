"""
Integration tests against the real test stack (``testbed/stack up``).
"""
