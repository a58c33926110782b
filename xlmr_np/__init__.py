"""xlmr-np: a pure-numpy XLM-RoBERTa cross-encoder (the architecture of BAAI/bge-reranker-base)."""

from .config import XLMRobertaConfig
from .errors import CheckpointError, ComparisonError, ConfigError, HubError, InputError, TokenizerError, XlmrNpError
from .parity import compare
from .reranker import ModelOutput, Reranker, sigmoid64
from .tokenizer import Batch, PairTokenizer

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "CheckpointError",
    "ComparisonError",
    "ConfigError",
    "HubError",
    "InputError",
    "ModelOutput",
    "PairTokenizer",
    "Reranker",
    "TokenizerError",
    "XLMRobertaConfig",
    "XlmrNpError",
    "compare",
    "sigmoid64",
]
