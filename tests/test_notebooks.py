"""The notebooks under notebooks/ run top to bottom on a results tree and are committed clean."""

from __future__ import annotations

import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

from tests.helpers.results_trees import golden_tree, write_run

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["longbench_tables", "ratio_curves", "memory_accuracy"]


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A "python3" kernelspec that runs this interpreter, found first; matplotlib draws inline, as in
    Jupyter, whatever MPLBACKEND the caller has (no display is ever opened)."""
    from ipykernel.kernelspec import write_kernel_spec

    jupyter_path = tmp_path / "jupyter"
    write_kernel_spec(jupyter_path / "kernels" / "python3")  # argv[0] = sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))  # searched before user and system dirs
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return tmp_path


def execute(name: str, results_root: Path, monkeypatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("SPARK_BENCH_RESULTS", str(results_root))
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> tuple[str, list[dict]]:
    """All text the cells showed (streams, text/plain, text/markdown, text/html), and every output."""
    every = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    texts = []
    for out in every:
        if out.output_type == "stream":
            texts.append(out.text)
        elif out.output_type in ("display_data", "execute_result"):
            texts += [out.data.get(kind, "") for kind in ("text/plain", "text/markdown", "text/html")]
    return "\n".join(texts), every


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert notebook.cells[0].cell_type == "markdown" and "python run.py -m" in notebook.cells[0].source
    assert 'RESULTS_ROOT = os.environ.get("SPARK_BENCH_RESULTS", "../results")' in code[0].source


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_a_results_tree(name, kernel_env, monkeypatch):
    root = kernel_env / "results"
    golden_tree(root)
    text, every = outputs(execute(name, root, monkeypatch))
    assert not [out for out in every if out.output_type == "error"]
    assert "5 runs, 15 rows" in text
    pngs = [out for out in every if "image/png" in out.get("data", {})]
    if name == "longbench_tables":
        assert not pngs
        assert "snap_spark (λ=0.8)" in text and "46.62" in text
        assert "| snap_spark (λ=0.8) | 35.25 | 58.00 | 46.62 | 0.33 |" in text  # the markdown block
        assert "baseline: snapkv = 100" in text and "101.67" in text  # snap_spark λ=0.5 on trec: 61 / 60
    elif name == "ratio_curves":
        assert len(pngs) == 1 and (root / "report" / "score_vs_key_ratio_llama3.1-8b_longbench.png").is_file()
        assert "50.25" in text and "46.62" in text
    else:
        assert len(pngs) == 1 and (root / "report" / "score_vs_kv_bytes_llama3.1-8b_longbench.png").is_file()
        assert "kv_cache_dense_bytes" in text and "snap_spark (λ=0.8)" in text and "0.33" in text
        assert "True" in text and "False" in text  # the Pareto flags


def test_an_empty_results_root_fails_with_a_clear_message(kernel_env, monkeypatch):
    with pytest.raises(nbclient.exceptions.CellExecutionError, match=r"no results\.json under"):
        execute("longbench_tables", kernel_env / "nothing_here", monkeypatch)


def test_the_kernel_runs_this_interpreter(kernel_env):
    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_keep_runs_that_differ_in_a_knob_apart(name, kernel_env, monkeypatch):
    """RULER at 4k and 128k, and 4k with recovery=none: three numbers, never their mean."""

    root = kernel_env / "results"
    write_run(root, "4k", 95.0)
    write_run(root, "128k", 40.0, {"dataset.context_length": 131072})
    write_run(root, "none", 60.0, {"recovery": "none", "press.recovery": "none"})
    text, every = outputs(execute(name, root, monkeypatch))
    assert not [out for out in every if out.output_type == "error"]
    assert "95.0" in text and "40.0" in text and "60.0" in text
    assert "65.0" not in text and "67.5" not in text and "77.5" not in text  # no mean of two or three
    assert "context_length=131072" in text
    if name != "memory_accuracy":  # its table names runs by row: the recovery is in it
        pngs = [out for out in every if "image/png" in out.get("data", {})]
        assert len(pngs) == (2 if name == "ratio_curves" else 0)  # one plot per context length
