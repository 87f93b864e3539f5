"""Benchmarks: `make bench` or `python -m benchmarks [similarity|retrieval|latency|parse]`."""
