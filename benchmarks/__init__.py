"""Side-by-side ratio benchmarks; results in BENCHMARKS.md."""
