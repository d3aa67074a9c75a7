"""Tests of L{comet.model.storage}, one module per module."""
