"""The benchmark's one error type."""


class BenchmarkError(RuntimeError):
    """The benchmark cannot run: a peer library or the benchmark model is missing, or a run failed."""
