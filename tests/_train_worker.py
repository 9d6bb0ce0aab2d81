"""Train a saved tiny PromptModel in its own process (for the kill/resume and multi-process tests).

Usage::

    python tests/_train_worker.py INIT_DIR CONFIG_JSON RESULT.safetensors [--slow S] [--threads N]
    accelerate launch --cpu --num_processes 2 tests/_train_worker.py INIT_DIR CONFIG_JSON RESULT.safetensors

The main process writes the trained weights to RESULT.safetensors, and the losses and the
number of processes to RESULT.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from promptkit import PromptModel, Template, Verbalizer
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("init_dir")
    parser.add_argument("config_json")
    parser.add_argument("result")
    parser.add_argument("--slow", type=float, default=0.0, help="seconds to sleep per forward step")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = PromptModel.from_pretrained(args.init_dir)
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
