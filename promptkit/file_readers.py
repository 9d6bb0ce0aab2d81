"""Read saved JSON and safetensors files so that a missing or damaged one is a clear promptkit error.

Every loader of promptkit's own formats (saved models, LoRA adapters, PET member stores)
reads through these, so a truncated or hand-edited file names its path and what is wrong
instead of surfacing a raw ``JSONDecodeError`` or ``SafetensorError``. Nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from promptkit.errors import PromptkitError, SavedModelError


def read_json(path: Path, error: type[PromptkitError] = SavedModelError) -> Any:
    """The JSON in ``path``; ``error`` names the file if it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path} is missing; the saved files are incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path} is not valid JSON ({err}); the file is damaged") from None


def read_safetensors(path: Path, error: type[PromptkitError] = SavedModelError) -> dict[str, torch.Tensor]:
    """The tensors in ``path``; ``error`` names the file if it is missing or not readable safetensors."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise error(f"{path} is missing; the saved files are incomplete") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise error(f"{path} is not a readable safetensors file ({err}); the file is damaged") from None
