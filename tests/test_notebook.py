"""examples/quickstart.ipynb: stored without outputs, and executed end to end on the offline default model."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from promptkit import data

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the dev extra: pip install -e '.[dev]'")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the dev extra: pip install -e '.[dev]'")

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"
# CI-sized settings, injected after the notebook's "parameters" cell (papermill's convention).
CI_PARAMETERS = "EVAL_SIZE = 32\nK = 4\nSTEPS = 4\nBATCH = 4"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"strip the outputs of: {cell.source[:60]!r}"


def _text(cell) -> str:
    """Printed text and displayed values of a cell, in order."""
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def _value(cell) -> str:
    """The ``text/plain`` of the value a cell ends with."""
    return next(o.data["text/plain"] for o in cell.outputs if o.output_type == "execute_result")


@pytest.mark.real_model
def test_notebook_runs_end_to_end_on_the_default_model(tmp_path):
    for split in ("train", "dev"):  # the notebook reads SST-2: without a source this is a skip (see conftest)
        data.where("sst2", split)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    where = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    notebook.cells.insert(where + 1, nbformat.v4.new_code_cell(CI_PARAMETERS, metadata={"tags": ["injected"]}))

    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(o.output_type != "error" for c in code for o in c.outputs)
    results = ast.literal_eval(_value(next(c for c in code if "fine-tuned on" in c.source)))
    assert set(results) == {"zero-shot", "zero-shot, calibrated", "fine-tuned on 8 reviews"}
    # 32 SST-2 dev reviews with the catalog's best template: clearly above chance without any training
    assert results["zero-shot"] > 0.65 and results["zero-shot, calibrated"] > 0.65
    search = _text(next(c for c in code if "GridSearchCV(" in c.source))
    assert "best: {'template': 'sst2/review_sentiment'}" in search  # the better template wins
    plot = next(c for c in code if "plt.show()" in c.source)
    assert any("image/png" in o.get("data", {}) for o in plot.outputs)
