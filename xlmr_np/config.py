"""The model's config.json as a frozen dataclass, with config.json's own field names.

Only the fields the forward pass needs are kept. Every one of them must be in the file: no silent
defaults, because a default that differs from the checkpoint's would give wrong scores without an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

from .errors import ConfigError

SUPPORTED_MODEL_TYPES = ("xlm-roberta",)
SUPPORTED_ARCHITECTURES = ("XLMRobertaForSequenceClassification",)
# transformers' ACT2FN["gelu"] is the exact erf form; the tanh approximations differ by ~1e-3.
SUPPORTED_ACTIVATIONS = ("gelu",)


@dataclass(frozen=True)
class XLMRobertaConfig:
    """What xlmr_np reads from config.json (bge-reranker-base's values in the comments)."""

    model_type: str  # "xlm-roberta"
    vocab_size: int  # V = 250002 sentencepiece pieces
    hidden_size: int  # D = 768
    num_hidden_layers: int  # 12 post-LN encoder layers
    num_attention_heads: int  # H = 12, so head size Dh = D / H = 64
    intermediate_size: int  # F = 3072 feed-forward width
    hidden_act: str  # "gelu": exact erf GELU
    max_position_embeddings: int  # P = 514 slots; positions start at pad_token_id + 1, so 512 usable
    type_vocab_size: int  # 1: every token has token type 0
    layer_norm_eps: float  # 1e-5
    pad_token_id: int  # 1: also the padding_idx that offsets position ids
    num_labels: int  # L = 1 relevance logit (from id2label)

    @property
    def head_size(self) -> int:
        """Dh, the width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def max_tokens(self) -> int:
        """The longest sequence the position table can hold (XLM-R: P - pad_token_id - 1 = 512)."""
        return self.max_position_embeddings - self.pad_token_id - 1

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> XLMRobertaConfig:
        """Build and validate a config from config.json's parsed contents.

        Example: from_dict({"model_type": "bert", ...}) raises
        ConfigError("config.json: model_type is 'bert'; xlmr_np runs only 'xlm-roberta'").
        """
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object, found {type(raw).__name__}")
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"{source}: model_type is {model_type!r}; xlmr_np runs only {SUPPORTED_MODEL_TYPES[0]!r}")
        architectures = raw.get("architectures")
        if architectures is not None and (
            not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures)
        ):
            raise ConfigError(
                f"{source}: architectures must be a list of class names such as "
                f"[{SUPPORTED_ARCHITECTURES[0]!r}], found {type(architectures).__name__} {architectures!r:.100}"
            )
        if architectures is not None and not any(a in SUPPORTED_ARCHITECTURES for a in architectures):
            raise ConfigError(
                f"{source}: architectures is {architectures!r}; xlmr_np runs only "
                f"{SUPPORTED_ARCHITECTURES[0]!r} (a cross-encoder needs the classification head)"
            )
        if raw.get("is_decoder"):
            raise ConfigError(f"{source}: is_decoder is true; xlmr_np runs only the bidirectional encoder")
        position_type = raw.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ConfigError(f"{source}: position_embedding_type is {position_type!r}; xlmr_np runs only 'absolute'")
        if raw.get("hidden_act") not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"{source}: hidden_act is {raw.get('hidden_act')!r}; xlmr_np runs only 'gelu' (exact erf)"
            )

        values = dict(raw)
        # transformers writes the label count as id2label; num_labels appears only in hand-written files.
        if "id2label" in raw and isinstance(raw["id2label"], dict):
            values["num_labels"] = len(raw["id2label"])
        elif "num_labels" not in raw:
            # transformers omits id2label when it holds its own default of two labels; this is the one
            # default we take, and the checkpoint's classifier.out_proj shape is still checked against it.
            values["num_labels"] = 2
        if "num_labels" in raw and values.get("num_labels") != raw["num_labels"]:
            raise ConfigError(
                f"{source}: num_labels is {raw['num_labels']} but id2label has {values['num_labels']} labels"
            )

        kwargs: dict[str, Any] = {}
        types: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float)}
        for f in fields(cls):
            if f.name not in values:
                raise ConfigError(f"{source}: required field {f.name!r} is missing")
            value: Any = values[f.name]
            expected = types[str(f.type)]  # field types are strings here (from __future__ import annotations)
            if isinstance(value, bool) or not isinstance(value, expected):
                raise ConfigError(
                    f"{source}: field {f.name!r} should be {f.type}, found {type(value).__name__} {value!r}"
                )
            kwargs[f.name] = float(cast(float, value)) if f.type == "float" else value
        config = cls(**kwargs)
        config._check_sizes(source)
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> XLMRobertaConfig:
        """Read and validate config.json."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config.json not found") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config.json ({e.strerror or e})") from None
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); JSON files are UTF-8"
            ) from None
        try:
            raw = json.loads(text)
        except ValueError as e:  # not JSON, or an integer too long to convert
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a config.json (nested too deeply)") from None
        return cls.from_dict(raw, source=str(path))

    def _check_sizes(self, source: str) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "num_labels",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{source}: {name} must be positive, found {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{source}: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"{source}: pad_token_id {self.pad_token_id} is outside the vocabulary")
        if self.max_tokens < 2:
            raise ConfigError(
                f"{source}: max_position_embeddings {self.max_position_embeddings} leaves no room for tokens "
                f"after the pad_token_id + 1 offset"
            )
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"{source}: layer_norm_eps must be positive, found {self.layer_norm_eps}")
