"""The chapter notebooks: built from notebooks/build.py, English and Korean code cells alike,
committed without outputs, and run top to bottom by a real notebook runner (nbclient)."""

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
ENGLISH = ROOT / "notebooks" / "normalizing_flows_chapter.ipynb"
KOREAN = ROOT / "notebooks" / "ko" / "normalizing_flows_chapter.ipynb"


def read(path):
    return nbformat.read(path, as_version=4)


def cells(notebook, kind):
    return [cell.source for cell in notebook.cells if cell.cell_type == kind]


def test_english_and_korean_share_their_code_cells():
    english, korean = read(ENGLISH), read(KOREAN)
    assert cells(english, "code") == cells(korean, "code")
    assert [c.cell_type for c in english.cells] == [c.cell_type for c in korean.cells]
    assert cells(english, "markdown") != cells(korean, "markdown")  # translated, not copied


def test_committed_notebooks_are_what_build_py_writes():
    spec = importlib.util.spec_from_file_location("notebook_build", ROOT / "notebooks" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for language, path in build.TARGETS.items():
        built = nbformat.reads(nbformat.writes(build.build(language)), as_version=4)
        assert built == read(path), f"{path} is stale: run python notebooks/build.py"


@pytest.mark.parametrize("path", [ENGLISH, KOREAN], ids=["en", "ko"])
def test_committed_notebooks_have_no_outputs(path):
    code = [cell for cell in read(path).cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def run_notebook(path, workdir):
    notebook = read(path)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


def test_english_notebook_runs_top_to_bottom(tmp_path):
    """Quick mode (FULL = False). Its cells assert what they teach; an exception fails the test."""
    notebook = run_notebook(ENGLISH, tmp_path)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    warned = [o.text for o in outputs if o.output_type == "stream" and "Warning" in o.text]
    assert not warned, warned  # e.g. tqdm's "IProgress not found" in a notebook without ipywidgets
    shown = [kind for o in outputs for kind in o.get("data", {}) if kind.startswith("image/")]
    assert shown.count("image/png") >= 6 and "image/gif" in shown  # the figures are drawn inline
    assert (tmp_path / "runs" / "book" / "training.gif").stat().st_size > 0


@pytest.mark.slow
def test_korean_notebook_runs_top_to_bottom(tmp_path):
    """The same code cells as the English one (tested above), so the default suite runs only that."""
    run_notebook(KOREAN, tmp_path)
