"""Scripts that measure the numbers docs/benchmarks.md quotes."""
