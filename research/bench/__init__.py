"""Benchmarks: attention kernels and encoder train steps (time, compiled memory, FLOPs, MFU)."""
