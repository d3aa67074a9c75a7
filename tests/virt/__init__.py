"""Tests of comet.virt."""
