"""The ``promptkit`` command line: ``templates``, ``predict``, ``evaluate`` and ``train``.

Every command prints a user error (a bad file, line, name or option) as one line starting
with ``error:`` on stderr and exits with status 1 (2 for a misused option), with no
traceback. Run ``promptkit COMMAND --help`` for examples.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from promptkit.errors import PromptkitError, did_you_mean

CALIBRATIONS = ("none", "content_free", "batch")
_CHUNK = 256  # rows scored and written at a time when streaming predictions


class UserError(click.ClickException):
    """A problem with what the user gave, printed as one ``error:`` line (exit status 1)."""


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


# ---------------------------------------------------------------- shared options
def _model_options(func: Any) -> Any:
    options = [
        click.option(
            "--model", "-m", default=None, metavar="NAME|DIR",
            help="Backbone alias (smollm2-135m, splade-tiny), hub name, local folder, or a folder written by "
            "save_pretrained / promptkit train.  [default: smollm2-135m]",
        ),
        click.option(
            "--template", "-t", default=None, metavar="NAME|TEXT",
            help="Catalog name (sst2/review_sentiment; see `promptkit templates`), promptsource:DATASET/NAME "
            "(promptsource:glue/sst2/review) or jinja text with {{ mask }}. Optional for a saved model.",
        ),
        click.option(
            "--verbalizer", "-v", default=None, metavar="NAME|MAPPING",
            help="Catalog name (sst2/great_terrible) or a YAML/JSON mapping '{0: [terrible], 1: [great]}'. "
            "Default: the template's own.",
        ),
        click.option("--calibrate", type=click.Choice(CALIBRATIONS), default=None,
                     help="Calibration of the label scores.  [default: none, or the saved model's]"),
        click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Examples per forward pass."),
        click.option("--max-length", type=click.IntRange(min=8), default=None, help="Most tokens per prompt."),
        click.option("--progress/--no-progress", default=None,
                     help="Show a progress bar on stderr.  [default: when stderr is a terminal]"),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _load_model(options: dict[str, Any]) -> Any:
    """A PromptModel from the shared options, template and verbalizer checked before loading weights."""
    from promptkit.backbones import DEFAULT_BACKBONE
    from promptkit.cli_config import prompt_pair
    from promptkit.model import PromptModel
    from promptkit.persistence import is_saved_model

    name = options["model"] or DEFAULT_BACKBONE
    template, verbalizer = prompt_pair(options["template"], options["verbalizer"])
    if not is_saved_model(name) and template is None:
        raise UserError(
            f"--model {name!r} is a backbone, not a saved promptkit model, so it needs --template "
            "(e.g. --template sst2/review_sentiment; `promptkit templates` lists them)"
        )
    settings = {k: options[k] for k in ("calibrate", "batch_size", "max_length") if options.get(k) is not None}
    with _loading_bars(options.get("progress")):
        return PromptModel.from_pretrained(name, template=template, verbalizer=verbalizer, **settings)


@contextlib.contextmanager
def _loading_bars(show: bool | None) -> Iterator[None]:
    """transformers' "Loading weights" bar only where promptkit's own bars are shown."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if enabled and not _showing(show):
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _showing(show: bool | None) -> bool:
    """Whether to draw progress bars: as asked, or when stderr is a terminal."""
    return sys.stderr.isatty() if show is None else show


def _progress(total: int, show: bool | None, unit: str = "row") -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, disable=not _showing(show))


def _chunks(rows: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------- the group
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="promptkit", message="%(prog)s %(version)s")
def cli() -> None:
    """Prompt-based classification with pretrained language models.

    \b
    Examples:
      promptkit templates sst2
      promptkit predict -t sst2/review_sentiment reviews.jsonl -o predictions.jsonl
      promptkit evaluate -t sst2/review_sentiment --calibrate content_free dev.csv
      promptkit train sst2-finetune.yaml
    """


@cli.command()
@click.argument("task", required=False)
@click.option(
    "--promptsource",
    "from_promptsource",
    is_flag=True,
    help="List the promptsource templates that convert for TASK (a task or promptsource dataset).",
)
def templates(task: str | None, from_promptsource: bool) -> None:
    """List the catalog's templates (of TASK, or all) with a rendered example.

    \b
    Examples:
      promptkit templates                    # every task
      promptkit templates rte                # RTE's templates, each rendered on RTE's example
      promptkit templates sst2 --promptsource    # promptsource's glue/sst2 prompts, converted
    """
    from promptkit import catalog

    if from_promptsource:
        if task is None:
            raise UserError(
                "--promptsource needs a TASK or promptsource dataset, e.g. `promptkit templates sst2 "
                "--promptsource` or `promptkit templates super_glue/cb --promptsource`"
            )
        _list_promptsource(task)
        return
    if task is not None:
        tasks = sorted({name.split("/")[0] for name in catalog.list_templates()})
        if task not in tasks:
            raise UserError(f"unknown task {task!r}; tasks with templates: {tasks}.{did_you_mean(task, tasks)}")
    names = catalog.list_templates(task)
    for name in names:
        template = catalog.load_template(name)
        verbalizer = catalog.load_verbalizer(catalog.paired_verbalizer(name))
        _show(name, template, verbalizer, template.example)
    click.echo(f"{len(names)} templates. Use one with --template NAME; its verbalizer is the default.")


def _show(name: str, template: Any, verbalizer: Any, example: Any) -> None:
    words = "; ".join(f"{label}: {' | '.join(words)}" for label, words in zip(verbalizer.labels, verbalizer.words))
    click.echo(click.style(name, bold=True) + f"   (verbalizer {verbalizer.name}: {words})")
    if example is not None:
        rendered = template.render(example).to_text()
        click.echo("    " + rendered.replace("\n", "\n    "))
    click.echo()


def _list_promptsource(task: str) -> None:
    from promptkit import catalog, promptsource

    collection = promptsource.load(task)
    example = None
    if collection.task is not None:
        example = catalog.load_template(catalog.list_templates(collection.task)[0]).example
    for converted in collection:
        name = f"promptsource:{collection.dataset}/{converted.name}"
        _show(f"'{name}'" if " " in name else name, converted.template, converted.verbalizer, example)
    skipped = ", ".join(f"{reason} ({n})" for reason, n in collection.reasons().items())
    click.echo(
        f"{len(collection)} of {len(collection) + len(collection.skipped)} promptsource templates of "
        f"{collection.dataset} convert." + (f" Not converted: {skipped}." if skipped else "")
    )


@cli.command()
@_model_options
@click.argument("input_file", metavar="IN.jsonl|IN.csv")
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="OUT.jsonl",
    help="Where to write one JSON object per row: its fields, 'prediction' and 'probabilities'.",
)
def predict(input_file: str, output: str, **options: Any) -> None:
    """Predict a label for every row of IN (.jsonl or .csv) and write OUT.jsonl.

    Each output line is the input row plus "prediction" (the label) and "probabilities"
    (label -> probability). Rows are read, scored and written in chunks, so files larger
    than memory work; OUT appears only when every row is done.

    \b
    Examples:
      promptkit predict -t sst2/review_sentiment reviews.jsonl -o predictions.jsonl
      promptkit predict -t "Review: {{ text }} Verdict: {{ mask }}" -v "{0: [bad], 1: [good]}" \\
          --calibrate content_free reviews.csv -o predictions.jsonl
      promptkit predict -m runs/sst2-finetuned reviews.jsonl -o predictions.jsonl
    """
    from promptkit.cli_io import check_fields, check_input, check_output, iter_rows, output_file, to_json_label

    path = check_input(input_file)
    check_output(output)
    total = sum(1 for _ in iter_rows(path))  # every line parses, before any weights are loaded
    model = _load_model(options)
    fields = sorted(model.template.variables)
    for line_no, row in iter_rows(path):  # every row has the template's fields, before any is scored
        check_fields(path, line_no, row, fields)
    if options["calibrate"] == "batch" or (model.calibrate == "batch" and model.calibration_ is None):
        model.fit_calibration([row for _, row in iter_rows(path)])
    labels = [to_json_label(label) for label in model.verbalizer.labels]
    with output_file(output) as out, _progress(total, options["progress"]) as bar:
        for chunk in _chunks(iter_rows(path), _CHUNK):
            rows = [row for _, row in chunk]
            proba = model.predict_proba(rows, progress=False)
            for row, p in zip(rows, proba):
                best = int(p.argmax())
                record = {
                    **row,
                    "prediction": labels[best],
                    "probabilities": dict(zip(map(str, labels), map(float, p))),
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            bar.update(len(rows))
    click.echo(f"wrote {total} predictions to {output}", err=True)


@cli.command()
@_model_options
@click.argument("input_file", metavar="[IN.jsonl|IN.csv]", required=False)
@click.option("--task", default=None, help="Evaluate on a built-in task instead of a file (sst2, rte, ...).")
@click.option("--split", default=None, help="Split of --task.  [default: the task's evaluation split]")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N rows.")
@click.option("--label-field", default="label", show_default=True, help="Column holding the true label.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
def evaluate(
    input_file: str | None, task: str | None, split: str | None, limit: int | None, label_field: str, as_json: bool,
    **options: Any,
) -> None:  # fmt: skip
    """Print accuracy, macro-F1 and the confusion matrix on labelled rows.

    Labels in IN must be labels of the verbalizer; text such as "1" or "true" in a CSV cell
    matches the label 1 or True.

    \b
    Examples:
      promptkit evaluate -t sst2/review_sentiment --calibrate content_free dev.jsonl
      promptkit evaluate -t sst2/review_sentiment --task sst2 --limit 200
      promptkit evaluate -m runs/sst2-finetuned --task sst2 --json
    """
    from promptkit.cli_io import check_input, iter_rows

    if (input_file is None) == (task is None):
        raise UserError("give either an input file or --task (e.g. `--task sst2 --limit 200`), not both or neither")
    if task is None and (split is not None):
        raise UserError("--split goes with --task; an input file is one split already")
    path = check_input(input_file) if input_file is not None else None
    if path is not None:
        for _ in iter_rows(path):  # every line parses, before any weights are loaded
            pass
    model = _load_model(options)
    rows = _labelled_rows(model, path, task, split, limit, label_field)
    import numpy as np
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    labels = list(model.verbalizer.labels)
    targets = np.array([labels.index(row[label_field]) for row in rows])
    if model.calibrate == "batch" and model.calibration_ is None:
        model.fit_calibration(rows)
    with _progress(len(rows), options["progress"]) as bar:
        predicted = []
        for chunk in _chunks(iter(rows), _CHUNK):
            predicted.extend(model.predict_proba(chunk, progress=False).argmax(-1).tolist())
            bar.update(len(chunk))
    predicted = np.array(predicted)
    indices = list(range(len(labels)))
    metrics = {
        "examples": len(rows),
        "accuracy": float(accuracy_score(targets, predicted)),
        "macro_f1": float(f1_score(targets, predicted, labels=indices, average="macro", zero_division=0)),
        "labels": [str(label) for label in labels],
        "confusion_matrix": confusion_matrix(targets, predicted, labels=indices).tolist(),
    }
    click.echo(json.dumps(metrics) if as_json else _metrics_text(metrics))


def _labelled_rows(
    model: Any, path: Path | None, task: str | None, split: str | None, limit: int | None, label_field: str
) -> list[dict[str, Any]]:
    from promptkit.cli_io import check_fields, match_label, read_labelled
    from promptkit.tasks import load_task

    fields = sorted(model.template.variables)
    labels = list(model.verbalizer.labels)
    if path is not None:
        rows = read_labelled(path, fields, labels, label_field)
        return rows[:limit] if limit is not None else rows
    rows = load_task(task, split, limit=limit)
    for i, row in enumerate(rows):
        where = f"task {task} row {i}"
        check_fields(Path(f"task {task}"), i, row, fields)
        row[label_field] = match_label(row.get(label_field), labels, where, label_field)
    return rows


def _metrics_text(metrics: dict[str, Any]) -> str:
    names = metrics["labels"]
    width = max(8, *(len(n) + 2 for n in names))
    lines = [
        f"examples  {metrics['examples']}",
        f"accuracy  {metrics['accuracy']:.4f}",
        f"macro-F1  {metrics['macro_f1']:.4f}",
        "confusion matrix (rows: true label, columns: predicted label)",
        " " * width + "".join(n.rjust(width) for n in names),
    ]
    for name, counts in zip(names, metrics["confusion_matrix"]):
        lines.append(name.ljust(width) + "".join(str(c).rjust(width) for c in counts))
    return "\n".join(lines)


@cli.command()
@click.argument("config_file", metavar="CONFIG.yaml")
@click.option("--progress/--no-progress", default=None, help="Show progress bars.  [default: on a terminal]")
def train(config_file: str, progress: bool | None) -> None:
    """Train with any registered strategy as CONFIG.yaml says, and save the model.

    \b
    CONFIG.yaml (relative paths are relative to its folder; unknown keys are errors):
      model: smollm2-135m                 # backbone alias, hub name, folder, or a saved model
      template: sst2/review_sentiment     # catalog name, promptsource:DATASET/NAME, or jinja text
      verbalizer: sst2/positive_negative  # optional: default the template's own
      calibrate: content_free             # optional: none | content_free | batch
      strategy: finetune                  # zero_shot, finetune, soft_prompt, prefix_tuning, pet, ...
      params:                             # optional: the strategy's keyword arguments
        config: {learning_rate: 2.0e-5, max_steps: 100, batch_size: 8, seed: 13}
      train: {task: sst2, split: train, k: 16, seed: 13}   # or train.jsonl / train.csv
      dev: {task: sst2, split: dev, limit: 200}            # optional: keeps the best weights
      unlabeled: unlabeled.jsonl          # optional (calibration prior, PET)
      label_field: label                  # optional: label column of train/dev files
      output: runs/sst2-finetuned         # the saved model (load it with --model)

    \b
    Example:
      promptkit train sst2-finetune.yaml && promptkit evaluate -m runs/sst2-finetuned --task sst2
    """
    from promptkit.cli_config import prompt_pair, read_train_config
    from promptkit.model import PromptModel
    from promptkit.persistence import is_saved_model
    from promptkit.strategies import get_strategy

    config = read_train_config(config_file)
    template_spec = config.get("template")
    if template_spec is not None and not isinstance(template_spec, str):
        raise UserError(f"{config_file}: 'template' must be a name or jinja text, got {template_spec!r}")
    template, verbalizer = prompt_pair(template_spec, config.get("verbalizer"))
    if template is None and not is_saved_model(config["model"]):
        raise UserError(f"{config_file}: 'template' is required when 'model' is a backbone, not a saved model")
    strategy = get_strategy(config["strategy"], **config["params"])  # unknown strategy or parameter: named
    settings = {k: config[k] for k in ("calibrate", "max_length", "batch_size") if config.get(k) is not None}
    with _loading_bars(progress):
        model = PromptModel.from_pretrained(config["model"], template=template, verbalizer=verbalizer, **settings)
    label_field = config.get("label_field", "label")
    data = {key: _config_rows(model, config.get(key), key, label_field) for key in ("train", "dev", "unlabeled")}
    click.echo(
        f"training {config['strategy']} on {len(data['train'] or [])} rows"
        + (f", dev {len(data['dev'])} rows" if data["dev"] else ""),
        err=True,
    )
    trained = strategy.fit(model, data["train"], data["unlabeled"], dev=data["dev"])
    with _loading_bars(progress):
        trained.save_pretrained(str(config["output"]))
    summary = f"saved the trained model to {config['output']}"
    if data["dev"]:
        summary += f"; dev accuracy {trained.score(data['dev'], label_key=label_field, progress=progress):.4f}"
    click.echo(summary)


def _config_rows(model: Any, spec: Any, key: str, label_field: str) -> list[dict[str, Any]] | None:
    from promptkit.cli_io import check_fields, iter_rows, read_labelled
    from promptkit.examples import sample_k_shot
    from promptkit.tasks import load_task

    if spec is None:
        return None
    fields = sorted(model.template.variables)
    labels = list(model.verbalizer.labels)
    if spec.file is not None:
        if key == "unlabeled":
            rows = []
            for line_no, row in iter_rows(spec.file):
                check_fields(spec.file, line_no, row, fields)
                rows.append(row)
        else:
            rows = read_labelled(spec.file, fields, labels, label_field)
        return rows[: spec.limit] if spec.limit is not None else rows
    rows = load_task(spec.task, spec.split, limit=None if spec.k is not None else spec.limit)
    if spec.k is not None:
        rows = sample_k_shot(rows, spec.k, seed=spec.seed)
        rows = rows[: spec.limit] if spec.limit is not None else rows
    return rows


# ---------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user errors become one ``error:`` line and a non-zero status."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="promptkit", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.ctx.get_help() if err.ctx is not None else str(err))
        return 2
    except click.UsageError as err:
        command = err.ctx.command_path if err.ctx is not None else "promptkit"
        click.echo(f"error: {_one_line(err.format_message())} (see `{command} --help`)", err=True)
        return 2
    except click.ClickException as err:
        click.echo(f"error: {_one_line(err.format_message())}", err=True)
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 1
    except (PromptkitError, OSError) as err:
        click.echo(f"error: {_one_line(err)}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0


def entry_point() -> None:
    """The ``promptkit`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
