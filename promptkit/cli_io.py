"""Files for the ``promptkit`` command line: read JSONL/CSV rows, write JSONL, match labels.

Every problem with a file is a :class:`~promptkit.errors.DataError` that names the file
and the line (``reviews.jsonl:3: not valid JSON ...``), so the command line can print it
as one line. Output files are written next to their destination and renamed into place
when complete: a failed or killed run leaves no half-written output.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from promptkit import atomic
from promptkit.errors import DataError, closest, did_you_mean

FORMATS = (".jsonl", ".csv")


def check_input(path: str | Path) -> Path:
    """``path`` as a Path, refused unless it is an existing ``.jsonl`` or ``.csv`` file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"input file {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise DataError(f"input {str(path)!r} is a folder, not a file; give a .jsonl or .csv file")
    if path.suffix.lower() not in FORMATS:
        raise DataError(
            f"input file {str(path)!r} has the extension {path.suffix or '(none)'!r}; promptkit reads "
            ".jsonl (one JSON object per line) or .csv (a header row, then one example per row)"
        )
    return path


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, row)`` of a ``.jsonl`` or ``.csv`` file, lazily.

    JSONL: one JSON object per line, blank lines skipped. CSV: a header row, then one row per
    example with as many cells as the header; values stay strings.

    Raises:
        DataError: a line is not a JSON object, or a CSV row does not fit the header; the
            message names the file and the line number.
    """
    path = check_input(path)
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as err:
        raise DataError(f"cannot read input file {str(path)!r}: {err.strerror}") from None
    with handle:
        try:
            if path.suffix.lower() == ".csv":
                yield from _csv_rows(path, handle)
            else:
                yield from _jsonl_rows(path, handle)
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None


def _jsonl_rows(path: Path, handle: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{line_no}: not valid JSON ({err.msg} at column {err.colno}); every line must be one "
                'JSON object such as {"text": "..."}'
            ) from None
        if not isinstance(row, dict):
            raise DataError(
                f"{path}:{line_no}: a JSON {type(row).__name__} where an object is expected; every line must be "
                'one JSON object such as {"text": "..."}'
            )
        yield line_no, row


def _csv_rows(path: Path, handle: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(handle)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty; a CSV file starts with a header row naming its columns")
        if len(set(header)) != len(header) or any(not name.strip() for name in header):
            raise DataError(f"{path}:1: the header {header} has an empty or repeated column name")
        for cells in reader:
            if not cells:
                continue
            if len(cells) != len(header):
                raise DataError(
                    f"{path}:{reader.line_num}: {len(cells)} cells where the header has {len(header)} "
                    f"({header}); quote cells that contain commas"
                )
            yield reader.line_num, dict(zip(header, cells))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None


def check_fields(path: Path, line_no: int, row: Mapping[str, Any], fields: Sequence[str]) -> None:
    """The row has every field the template reads; otherwise name the line, field and closest column."""
    for name in fields:
        if name not in row:
            raise DataError(
                f"{path}:{line_no}: no field {name!r}, which the template reads (it reads {sorted(fields)}); "
                f"the row has {sorted(map(str, row))}.{did_you_mean(name, row)} Rename the column or pick "
                "another template"
            )


def match_label(value: Any, labels: Sequence[Any], where: str, label_field: str) -> Any:
    """The label of ``labels`` that ``value`` stands for: itself, or the one label whose text
    it is (a CSV cell ``"1"`` is the label ``1``, ``"true"``/``"True"`` is ``True``).

    Raises:
        DataError: no label matches; the message names ``where``, the value and the labels.
    """
    if value is None:
        raise DataError(f"{where}: {label_field!r} is null; every row needs a label to evaluate or train on")
    for label in labels:
        if value == label and type(value) is type(label):
            return label
    text = str(value).strip().lower()
    matches = [label for label in labels if str(label).lower() == text]
    if len(matches) == 1:
        return matches[0]
    hint = closest(value, [str(label) for label in labels])
    tip = f" Did you mean {hint!r}?" if hint is not None else ""
    raise DataError(
        f"{where}: {label_field} {value!r} is not a label of the verbalizer, whose labels are {list(labels)}.{tip}"
    )


def read_labelled(path: Path, fields: Sequence[str], labels: Sequence[Any], label_field: str) -> list[dict]:
    """All rows of ``path``, checked to have ``fields`` and a label of ``labels`` (matched as
    :func:`match_label` does, under the key ``label_field``)."""
    rows = []
    for line_no, row in iter_rows(path):
        check_fields(path, line_no, row, fields)
        if label_field not in row:
            raise DataError(
                f"{path}:{line_no}: no {label_field!r} field to evaluate against; the row has "
                f"{sorted(map(str, row))}.{did_you_mean(label_field, row)} Use --label-field to name the column"
            )
        row[label_field] = match_label(row[label_field], labels, f"{path}:{line_no}", label_field)
        rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no rows")
    return rows


def to_json_label(label: Any) -> Any:
    """A label as JSON writes it (JSON keeps str, int, float and bool)."""
    return label if isinstance(label, (str, int, float, bool)) or label is None else str(label)


def check_output(path: str | Path) -> Path:
    """``path`` as a Path, refused if it is a folder or its folder does not exist."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"output {str(path)!r} is a folder; give a file name such as predictions.jsonl")
    if not path.parent.is_dir():
        raise DataError(f"the folder of output {str(path)!r} does not exist; create it first")
    return path


@contextlib.contextmanager
def output_file(path: str | Path) -> Iterator[IO[str]]:
    """A text file written beside ``path`` and renamed onto it (fsynced) only if the block
    finishes; on an error the partial file is removed and ``path`` is left as it was."""
    path = check_output(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        atomic.fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
