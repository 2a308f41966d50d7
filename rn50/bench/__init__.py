"""Benchmarks: inference sweeps (infer, runtimes, timing), training scaling, input pipelines; writers (report)."""
