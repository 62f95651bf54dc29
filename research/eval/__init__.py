"""Evaluations of frozen encoders (no training of the encoder): research/eval/polysemy.py."""
