"""The exceptions xlmr_np raises for user-facing failures.

Every failure a user can cause (a bad model directory, a corrupt file, bad input) raises one of these,
never a bare KeyError or IndexError from deep inside. They subclass ValueError/OSError where that is
what a caller would naturally catch.
"""


class XlmrNpError(Exception):
    """Base class of every error xlmr_np raises on purpose."""


class ConfigError(XlmrNpError, ValueError):
    """config.json is missing, unreadable, or describes a model xlmr_np cannot run."""


class CheckpointError(XlmrNpError, ValueError):
    """A weights file is missing, truncated, corrupt, or does not match the config.

    The message names the file, the tensor key, and what was expected versus found.
    """


class TokenizerError(XlmrNpError, ValueError):
    """tokenizer.json is missing or unusable."""


class InputError(XlmrNpError, ValueError):
    """The pairs passed to the model are malformed (empty list, non-string text, bad shape)."""


class BenchmarkError(XlmrNpError, RuntimeError):
    """The benchmark cannot run: a peer library or the benchmark model is missing, or a run failed."""
