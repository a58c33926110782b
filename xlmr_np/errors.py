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


class HubError(XlmrNpError, OSError):
    """A model name could not be resolved to a local directory: not cached while offline, unknown repo,
    unknown revision, or a repo without the files xlmr_np reads."""


class ComparisonError(XlmrNpError, ValueError):
    """The reference model cannot be compared module by module (a module or an output is missing)."""


class DatasetError(XlmrNpError, ValueError):
    """An evaluation dataset cannot be downloaded or read, or does not have the expected layout."""


class CacheError(XlmrNpError, ValueError):
    """A score cache file is corrupted, was written by another program, or belongs to another model or task.

    Never used silently: the message names the file, what it holds versus what this run expected, and
    what to do (usually: move the file away and rescore).
    """


class ShardError(XlmrNpError, ValueError):
    """Shard results cannot be merged: one is missing, incomplete, duplicated, corrupted or from another run."""
