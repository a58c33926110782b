"""The exceptions xlmr_np raises for user-facing failures.

Every failure a user can cause (a bad model directory, a corrupt file, bad input) raises one of these,
never a bare KeyError or IndexError from deep inside. They subclass ValueError/OSError where that is
what a caller would naturally catch.
"""


class XlmrNpError(Exception):
    """Base class of every error xlmr_np raises on purpose.

    `where` (optional) names the place at fault: a file and line ("docs.txt:3"), an option ("--port"), or
    an item of the input ("pairs[2]"). The message reads "<what> (<where>)", the form `xlmr-np` prints
    after "xlmr-np <command>: error: ".
    """

    def __init__(self, message: str, *, where: str | None = None):
        super().__init__(f"{message} ({where})" if where else message)
        self.what = message
        self.where = where


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


class UsageError(InputError):
    """A command-line argument or option is invalid: `xlmr-np` exits with status 2, as argparse does."""


class OutputError(XlmrNpError, OSError):
    """A result cannot be written: its directory is missing or is a file, it cannot be written, the disk is
    full. Raised before the work when it can be foreseen; a file is never left half-written."""


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
