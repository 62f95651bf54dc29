"""Shared inputs for the attention tests: the conformance library's (one implementation for tests and notebooks)."""

from __future__ import annotations

from research.attention.conformance import init_apply, packed_segments, qkv, reference_output

__all__ = ["init_apply", "packed_segments", "qkv", "reference_output"]
