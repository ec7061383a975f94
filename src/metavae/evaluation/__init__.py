"""Evaluation: linear probes on held-out distributions."""
