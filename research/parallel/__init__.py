"""Parallelism beyond the batch: sequence-parallel attention over a mesh axis that splits the length."""
