"""Synthetic and benchmark task datasets."""
