"""The chapter notebooks: built from notebooks/build.py, English and Korean code cells alike,
committed without outputs, and run top to bottom by a real notebook runner (nbclient)."""

import importlib.util
import json
import shutil
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


def load_build(path=ROOT / "notebooks" / "build.py"):
    spec = importlib.util.spec_from_file_location("notebook_build", path)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


def test_committed_notebooks_are_what_build_py_writes():
    build = load_build()
    for language, path in build.TARGETS.items():
        built = nbformat.reads(nbformat.writes(build.build(language)), as_version=4)
        assert built == read(path), f"{path} is stale: run python notebooks/build.py"


def test_a_book_run_stopped_early_is_written_up_from_what_the_benchmark_records(tmp_path):
    # build.py on a summary of a stopped run, with only the keys benchmarks/book_recipe.py writes
    measured = json.loads((ROOT / "docs" / "book_recipe.json").read_text())
    measured["book"].update(steps_done=1200, train_seconds=250.0)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "book_recipe.json").write_text(json.dumps(measured))
    shutil.copy(ROOT / "notebooks" / "build.py", tmp_path / "notebooks" / "build.py")
    build = load_build(tmp_path / "notebooks" / "build.py")
    english, korean = ("\n".join(cells(build.build(language), "markdown")) for language in ("en", "ko"))
    assert "stopped at step 1,200 of" in english and "after 250 s of training" in english
    assert "1,200 스텝(250초)에서 중단" in korean


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
