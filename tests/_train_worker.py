"""Train a saved tiny PromptModel in its own process (for the kill/resume and multi-process tests).

Usage::

    python tests/_train_worker.py INIT_DIR CONFIG_JSON RESULT.safetensors [--slow S] [--slow-save S]
        [--threads N] [--backbone]
    accelerate launch --cpu --num_processes 2 tests/_train_worker.py INIT_DIR CONFIG_JSON RESULT.safetensors

The main process writes the trained weights to RESULT.safetensors, and the losses and the
number of processes to RESULT.json. ``--slow-save S`` sleeps S seconds after each file a
checkpoint save writes (by wrapping ``checkpoint.save``; the library is unchanged), so a test
can kill the process in the middle of a save. ``--backbone``: INIT_DIR holds a transformers
backbone and its tokenizer (``save_pretrained`` of both), wrapped with TEMPLATE and VERBALIZER.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from promptkit import PromptModel, Template, Verbalizer, checkpoint
from promptkit.checkpoint import trainable_state
from promptkit.train import train
from promptkit.train_config import TrainConfig

_SUBJECTS = ["the movie", "my cat", "this song", "the weather", "our team", "that book", "a friend", "the food"]
# 16 examples: "zorp" means label 1, "blick" label 0.
KEYWORD = [{"text": f"{s} was zorp", "label": 1} for s in _SUBJECTS] + [
    {"text": f"{s} was blick", "label": 0} for s in _SUBJECTS
]
TEMPLATE = Template("{{ text }}. It was {{ mask }}")
VERBALIZER = Verbalizer({0: ["bad"], 1: ["good"]})


def load_backbone_model(init_dir: str) -> PromptModel:
    """A PromptModel around the transformers backbone and tokenizer saved in ``init_dir``."""
    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    is_mlm = tokenizer.mask_token is not None
    backbone = (AutoModelForMaskedLM if is_mlm else AutoModelForCausalLM).from_pretrained(init_dir).eval()
    return PromptModel(backbone, tokenizer, TEMPLATE, VERBALIZER)


def slow_down_saves(seconds: float) -> None:
    """Make every checkpoint save pause ``seconds`` after each file it writes (same bytes, more time)."""
    plain_save, plain_save_file = checkpoint.save, checkpoint.save_file

    def sleepy_save_file(*args, **kwargs):
        plain_save_file(*args, **kwargs)
        time.sleep(seconds)

    def save(*args, **kwargs):
        checkpoint.save_file = sleepy_save_file
        try:
            return plain_save(*args, **kwargs)
        finally:
            checkpoint.save_file = plain_save_file

    checkpoint.save = save


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("init_dir")
    parser.add_argument("config_json")
    parser.add_argument("result")
    parser.add_argument("--slow", type=float, default=0.0, help="seconds to sleep per forward step")
    parser.add_argument("--slow-save", type=float, default=0.0, help="seconds to sleep per file a save writes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backbone", action="store_true", help="INIT_DIR is a transformers backbone + tokenizer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_backbone_model(args.init_dir) if args.backbone else PromptModel.from_pretrained(args.init_dir)
    if args.slow_save:
        slow_down_saves(args.slow_save)
    if args.slow:  # give the test time to kill us between checkpoints; the arithmetic is unchanged
        plain_forward = model.forward

        def slow_forward(batch):
            time.sleep(args.slow)
            return plain_forward(batch)

        model.forward = slow_forward
    result = train(model, KEYWORD, TrainConfig.from_dict(json.loads(args.config_json)))
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_rank() != 0:
        return
    save_file(trainable_state(model), args.result)
    world = torch.distributed.get_world_size() if distributed else 1
    Path(args.result).with_suffix(".json").write_text(json.dumps({"losses": result.losses, "processes": world}))


if __name__ == "__main__":
    main()
