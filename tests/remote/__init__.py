"""Tests of comet.remote."""
