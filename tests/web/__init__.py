"""Tests of Comet."""
