"""CI: runs every notebook of Notebooks/ headless against a run folder and checks the figures.

    python tools/run_notebooks.py RUN_DIR --sweep SWEEP_DIR [--figures DIR]

Fails if a committed notebook holds outputs (they are committed stripped), if a cell raises, or
if a notebook does not save the figures it should. Also runs the helper module's tests.
"""
import argparse
import glob
import os
import subprocess
import sys
import unittest

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "Notebooks")
EXPECTED = {
    "training_curves.ipynb": ["training_steps", "training_epochs"],
    "evaluation.ipynb": ["evaluation_accuracy", "confusion_matrix"],
    "embeddings.ipynb": ["embeddings_pca", "embeddings_tsne", "nearest_neighbours"],
    "reconstructions.ipynb": ["reconstructions"],
    "attention.ipynb": ["attention_0", "attention_1"],
    "views.ipynb": ["views"],
    "sweeps.ipynb": ["sweep_results"],
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--sweep", required=True, help="a sweep folder (runs/NAME/sweep-TIMESTAMP) for sweeps.ipynb")
    parser.add_argument("--figures", default=None)
    args = parser.parse_args()
    run = os.path.abspath(args.run)
    figures = os.path.abspath(args.figures or os.path.join(run, "figures"))
    os.environ["WORKBENCH_RUN"] = run
    os.environ["WORKBENCH_FIGURES"] = figures
    os.environ["WORKBENCH_SWEEP"] = os.path.abspath(args.sweep)
    os.environ.setdefault("WORKBENCH_BIN", os.path.join(ROOT, ".build", "release", "workbench"))
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    notebooks = sorted(glob.glob(os.path.join(NOTEBOOKS, "*.ipynb")))
    assert sorted(map(os.path.basename, notebooks)) == sorted(EXPECTED), f"notebooks {notebooks} vs {sorted(EXPECTED)}"
    failures = []
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        stored = [c for c in notebook.cells if c.cell_type == "code" and (c.outputs or c.execution_count)]
        if stored:
            failures.append(f"{os.path.basename(path)} is committed with outputs; strip them (jupyter nbconvert --clear-output)")
        try:
            NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}).execute()
        except Exception as error:  # a failing cell: report it and go on with the others
            failures.append(f"{os.path.basename(path)}: {str(error)[-2000:]}")
            continue
        for figure in EXPECTED[os.path.basename(path)]:
            if not os.path.isfile(os.path.join(figures, figure + ".png")):
                failures.append(f"{os.path.basename(path)} did not save {figure}.png")
        print(f"ran {os.path.basename(path)}")

    sys.path.insert(0, NOTEBOOKS)
    suite = unittest.defaultTestLoader.discover(NOTEBOOKS, pattern="test_*.py")
    if not unittest.TextTestRunner(verbosity=1).run(suite).wasSuccessful():
        failures.append("the helper module's tests failed")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print(f"every notebook ran; figures in {figures}")


if __name__ == "__main__":
    main()
