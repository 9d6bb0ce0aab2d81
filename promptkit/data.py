"""Where benchmark data comes from: local folders, a per-user cache, the Hugging Face hub.

:func:`promptkit.load_task` reads each split from the first of these sources that has it:

1. ``env``: ``$PROMPTKIT_DATA``, a folder in promptkit's layout (``sst2/dev.tsv``,
   ``ag_news/test.csv``, ``rte/superglue/val.jsonl``, ...; each task's paths are in
   ``promptkit.tasks.TASKS[name].splits``);
2. ``shared``: a ``shared/data`` folder above the working directory or the package (a
   checkout inside the promptkit workspace);
3. ``cache``: the per-user cache folder :func:`cache_root` (``$PROMPTKIT_CACHE/data``,
   default ``~/.cache/promptkit/data``), in the same layout, for files you put there;
4. ``hub-cache``: a split downloaded from the hub before, kept as plain JSON Lines (one
   normalised row per line, no pickle) with a small JSON description beside it under
   ``<cache_root>/hub/<task>/<split>.jsonl``;
5. ``hub``: the Hugging Face hub through the ``datasets`` library (``pip install
   "promptkit[data]"``). The split is downloaded once, converted to promptkit's rows (same
   labels, same text cleaning as the local readers, see :mod:`promptkit.data_hub`) and
   written to the cache; later loads read the cache.

:func:`where` tells which source a split comes from without reading it. With no source
the error (:class:`DataUnavailableError`, a :class:`~promptkit.errors.DataError`) is one
paragraph naming the three ways to get the data.

``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE=1``) keeps promptkit off the network.
``$PROMPTKIT_HUB_MIRROR`` points the hub step at an offline copy of the hub: a folder
holding ``<dataset id>/<config or "default">`` as written by ``DatasetDict.save_to_disk``
(air-gapped clusters, tests).

Example:
    >>> from promptkit.data import where
    >>> where("sst2", "dev")  # doctest: +SKIP
    DataSource(task='sst2', split='dev', kind='shared', path=PosixPath('/work/shared/data/sst2/dev.tsv'), hub=None)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from promptkit import atomic, tasks
from promptkit.data_hub import HubSource, check_features, convert, hub_source
from promptkit.errors import DataError, DataUnavailableError
from promptkit.tasks import ENV_VAR, TaskInfo, get_task

logger = logging.getLogger(__name__)

CACHE_ENV = "PROMPTKIT_CACHE"
MIRROR_ENV = "PROMPTKIT_HUB_MIRROR"
CACHE_FORMAT = 1
SOURCES = ("env", "shared", "cache", "hub-cache", "hub")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


@dataclass(frozen=True)
class DataSource:
    """Where one split of a task is read from.

    Attributes:
        task: task name.
        split: split name.
        kind: one of :data:`SOURCES`: ``"env"``, ``"shared"``, ``"cache"``, ``"hub-cache"``
            or ``"hub"`` (not downloaded yet).
        path: the file read; for ``"hub"`` the cache file the download will be written to.
        hub: for ``"hub-cache"`` and ``"hub"``, the hub dataset, config and split.
    """

    task: str
    split: str
    kind: str
    path: Path
    hub: str | None = None

    def __str__(self) -> str:
        what = {
            "env": f"${ENV_VAR}",
            "shared": "the shared/data folder",
            "cache": "the cache folder",
            "hub-cache": f"the cache, downloaded before from the Hugging Face hub {self.hub}",
            "hub": f"the Hugging Face hub {self.hub}, to be downloaded into",
        }[self.kind]
        return f"{self.task}/{self.split}: {what} {self.path}"


# ------------------------------------------------------------------ folders
def cache_root() -> Path:
    """The data cache folder: ``$PROMPTKIT_CACHE/data`` (default ``~/.cache/promptkit/data``).

    Example:
        >>> cache_root().name
        'data'
    """
    from promptkit.backbones import cache_dir

    return cache_dir() / "data"


def env_root() -> Path | None:
    """``$PROMPTKIT_DATA`` as a folder, None if unset; an error if it is set but no folder."""
    value = os.environ.get(ENV_VAR)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(
            f"${ENV_VAR}={value!r} is not a directory; point it at the folder holding sst2/, ag_news/, ... or unset it."
        )
    return path


def shared_root() -> Path | None:
    """The first ``<ancestor>/shared/data`` above the working directory or the package, or None."""
    for start in (Path.cwd(), Path(tasks.__file__).resolve().parent):
        for ancestor in (start, *start.parents):
            if (ancestor / "shared" / "data").is_dir():
                return ancestor / "shared" / "data"
    return None


def hub_cache_file(task: str, split: str) -> Path:
    """Where a split downloaded from the hub is kept: ``<cache_root>/hub/<task>/<split>.jsonl``."""
    return cache_root() / "hub" / task / f"{split}.jsonl"


# ------------------------------------------------------------------ resolution
def where(task: str | TaskInfo, split: str | None = None) -> DataSource:
    """Which source :func:`promptkit.load_task` reads ``task``/``split`` from (nothing is read).

    Args:
        task: task name or :class:`~promptkit.tasks.TaskInfo`.
        split: split name; default the task's evaluation split.

    Raises:
        DataUnavailableError: no source has it; the message names the three ways to get it.

    Example:
        >>> where("sst2").kind  # doctest: +SKIP
        'shared'
    """
    info = get_task(task)
    split = _split(info, split)
    found, _ = _resolve(info, split)
    return found


def _split(info: TaskInfo, split: str | None) -> str:
    split = info.default_eval_split if split is None else split
    if split not in info.splits:
        raise DataError(tasks._unknown(f"split of task {info.name!r}", split, info.splits))
    return split


def _resolve(info: TaskInfo, split: str) -> tuple[DataSource, list[str]]:
    """The first source that has the split, else raise with what was tried."""
    rel = info.splits[split]
    tried: list[str] = []
    env = env_root()
    if env is None:
        tried.append(f"${ENV_VAR} is not set")
    elif (env / rel).is_file():
        return DataSource(info.name, split, "env", env / rel), tried
    else:
        tried.append(f"${ENV_VAR}={env} has no {rel}")
    shared = shared_root()
    if shared is None:
        tried.append(f"there is no shared/data folder above {Path.cwd()} or {Path(tasks.__file__).resolve().parent}")
    elif (shared / rel).is_file():
        return DataSource(info.name, split, "shared", shared / rel), tried
    else:
        tried.append(f"{shared} has no {rel}")
    cache = cache_root()
    if (cache / rel).is_file():
        return DataSource(info.name, split, "cache", cache / rel), tried
    tried.append(f"the cache folder {cache} has no {rel}")
    source = hub_source(info.name)
    hub_file = hub_cache_file(info.name, split)
    if source is not None and split in source.splits:
        if _cached_rows_count(hub_file) is not None:
            return DataSource(info.name, split, "hub-cache", hub_file, source.describe(split)), tried
        reason = _hub_unavailable()
        if reason is None:
            return DataSource(info.name, split, "hub", hub_file, source.describe(split)), tried
        tried.append(reason)
    elif source is not None and split in source.missing:
        tried.append(f"the Hugging Face hub has no copy: {source.missing[split]}")
    else:
        tried.append(f"promptkit knows no Hugging Face hub copy of {info.name}/{split}")
    raise DataUnavailableError(missing_data_message(info, split, tried))


def _hub_unavailable() -> str | None:
    """Why the hub cannot be used now (no ``datasets``, offline mode), or None."""
    if importlib.util.find_spec("datasets") is None:
        return "the Hugging Face hub was not tried: the `datasets` package is not installed"
    if os.environ.get(MIRROR_ENV):
        return None
    for name in _OFFLINE_VARS:
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"the Hugging Face hub was not tried: {name} is set (offline mode)"
    return None


def missing_data_message(info: TaskInfo, split: str, tried: list[str] | None = None) -> str:
    """The one-paragraph error for a split no source has: what was tried and the three ways to get it.

    Example:
        >>> from promptkit.tasks import get_task
        >>> "PROMPTKIT_DATA" in missing_data_message(get_task("sst2"), "dev")
        True
    """
    rel = info.splits[split]
    cache = cache_root()
    source = hub_source(info.name)
    if source is not None and split in source.splits:
        hub = (
            f'(2) `pip install "promptkit[data]"` (in a checkout: `pip install -e ".[data]"`) on a machine with '
            f"network, and the split is downloaded once from the Hugging Face hub, {source.describe(split)}, "
            f"into {cache / 'hub'}"
        )
    elif source is not None and split in source.missing:
        hub = f"(2) not for this split: {source.missing[split]}"
    else:
        hub = f"(2) not for this split: promptkit knows no Hugging Face hub copy of {info.name}/{split}"
    looked = f" Looked for it: {'; '.join(tried)}." if tried else ""
    return (
        f"No data for {info.name}/{split} (file {rel}).{looked} Get it one of three ways: "
        f"(1) set ${ENV_VAR} to a folder that holds the benchmark files in promptkit's layout, "
        f"here <folder>/{rel} (the layout of every task: sst2/{{train,dev,test}}.tsv, ag_news/test.csv, "
        f"rte/superglue/{{train,val,test}}.jsonl, ...; see promptkit.tasks.TASKS[name].splits); {hub}; "
        f"(3) put the file into the cache folder in the same layout, here {cache / rel} "
        f"(${CACHE_ENV} moves the cache; now {cache.parent})."
    )


# ------------------------------------------------------------------ reading
def read_split(info: TaskInfo, split: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of ``info``/``split`` from the first source that has them (what ``load_task`` calls).

    Raises:
        DataUnavailableError: no source has the split.
    """
    found, tried = _resolve(info, split)
    logger.debug("%s", found)
    if found.kind in ("env", "shared", "cache"):
        return tasks.read_file(info, split, found.path, limit)
    if found.kind == "hub-cache":
        rows = _read_cached(info, split, found.path, limit)
        if rows is not None:
            return rows
    source = hub_source(info.name)
    assert source is not None  # _resolve gives "hub" kinds only for tasks with a HubSource
    rows = download(info, split, source, tried)
    return rows if limit is None else rows[:limit]


def download(info: TaskInfo, split: str, source: HubSource, tried: list[str] | None = None) -> list[dict[str, Any]]:
    """Fetch one split from the hub (or ``$PROMPTKIT_HUB_MIRROR``), convert it and cache it.

    ``tried`` lists the sources already looked at, for the error message.

    Raises:
        DataUnavailableError: ``datasets`` is missing or the hub cannot be reached.
        DataError: the hub copy's columns or label encoding are not the expected ones.
    """
    reason = _hub_unavailable()
    if reason is None:
        try:
            dataset = _fetch(source, split)
        except DataUnavailableError as err:
            reason = str(err)
    if reason is not None:
        raise DataUnavailableError(missing_data_message(info, split, [*(tried or []), reason]))
    check_features(source, split, getattr(dataset, "features", None))
    rows, dropped = convert(info, split, dataset, source)
    if dropped:
        logger.info("%s/%s: dropped %d hub rows with labels outside %s", info.name, split, dropped, info.labels)
    _write_cached(info, split, source, rows, dropped)
    return rows


def _fetch(source: HubSource, split: str) -> Any:
    """The hub split as a ``datasets.Dataset``; DataUnavailableError if it cannot be had."""
    import datasets

    hub_split = source.splits[split]
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        folder = Path(mirror).expanduser() / source.dataset / (source.config or "default")
        if not folder.is_dir():
            raise DataUnavailableError(
                f"${MIRROR_ENV}={mirror} has no {source.dataset}/{source.config or 'default'} folder "
                "(DatasetDict.save_to_disk output)"
            )
        stored = datasets.load_from_disk(str(folder))
        if hub_split not in stored:
            raise DataUnavailableError(f"the mirror {folder} has no split {hub_split!r} (it has {sorted(stored)})")
        return stored[hub_split]
    unreachable = _unreachable()
    if unreachable:
        raise DataUnavailableError(unreachable)
    logger.info("Downloading %s from the Hugging Face hub (once; then cached)", source.describe(split))
    try:
        return datasets.load_dataset(source.dataset, source.config, split=hub_split)
    except Exception as err:  # network, hub or format errors all mean: not available here
        text = " ".join(str(err).split())[:300]
        raise DataUnavailableError(
            f"the Hugging Face hub did not give {source.describe(split)}: {type(err).__name__}: {text}"
        ) from None


def _unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub host cannot be reached (a quick TCP connect), or None; skipped behind a proxy."""
    if any(os.environ.get(name) for name in _PROXY_VARS):
        return None
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"the Hugging Face hub ({host}) cannot be reached from here: {err}"
    return None


# ------------------------------------------------------------------ the cache of hub downloads
def _meta_file(path: Path) -> Path:
    return path.with_suffix(".json")


def _cached_rows_count(path: Path) -> int | None:
    """Rows promised by the description beside a cached split, or None if it is not usable."""
    meta = _meta_file(path)
    if not path.is_file() or not meta.is_file():
        return None
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.warning("Ignoring the damaged cache description %s", meta)
        return None
    if not isinstance(info, dict) or info.get("format") != CACHE_FORMAT or not isinstance(info.get("rows"), int):
        logger.warning("Ignoring %s: not a promptkit data cache of format %d", meta, CACHE_FORMAT)
        return None
    return info["rows"]


def _write_cached(info: TaskInfo, split: str, source: HubSource, rows: list[dict], dropped: int) -> Path:
    """Write rows as JSON Lines, then the description that makes them valid (both atomic)."""
    path = hub_cache_file(info.name, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    description = {
        "format": CACHE_FORMAT,
        "task": info.name,
        "split": split,
        "dataset": source.dataset,
        "config": source.config,
        "hub_split": source.splits[split],
        "rows": len(rows),
        "dropped": dropped,
    }
    atomic.write_text(_meta_file(path), json.dumps(description, indent=1) + "\n")
    logger.info("Cached %d rows of %s/%s in %s", len(rows), info.name, split, path)
    return path


def _read_cached(info: TaskInfo, split: str, path: Path, limit: int | None) -> list[dict] | None:
    """Rows of a cached hub split, or None (with a warning) if the file is damaged."""
    expected = _cached_rows_count(path)
    rows: list[dict] = []
    labeled = split not in info.unlabeled_splits
    count = 0
    try:
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                row = json.loads(line)
                _check_cached_row(info, row, labeled, f"{path}:{line_no}")
                count += 1
                if limit is None or len(rows) < limit:
                    rows.append(row)
    except (OSError, ValueError, DataError) as err:
        logger.warning("Ignoring the damaged cache file %s (%s); fetching it again", path, err)
        return None
    if count != expected:
        logger.warning("Ignoring the cache file %s: %d rows, its description says %s", path, count, expected)
        return None
    return rows


def _check_cached_row(info: TaskInfo, row: Any, labeled: bool, where: str) -> None:
    if not isinstance(row, dict):
        raise DataError(f"{where}: not a JSON object")
    for name in info.fields:
        if not isinstance(row.get(name), str):
            raise DataError(f"{where}: field {name!r} missing or not text")
    label = row.get("label")
    if labeled and (label not in info.labels or type(label) is not type(info.labels[0])):
        raise DataError(f"{where}: label {label!r} is not one of {info.labels}")
    if not labeled and label is not None:
        raise DataError(f"{where}: label {label!r} on an unlabeled split")
