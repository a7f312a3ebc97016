"""Reads workbench run folders (the schema of the README's "The run folder") for the notebooks.

    from workbench_runs import load_runs
    runs = load_runs()                      # WORKBENCH_RUN (comma-separated), else the newest run
    run = runs[0]
    run.stages                              # ['pretrain', 'linear_probe', 'knn', 'finetune', 'extract']
    run.steps('pretrain')['loss']           # per-step arrays
    run.results('knn')['test_top1']

Only h5py and numpy; Fashion-MNIST images come from the IDX files of Debian's
dataset-fashion-mnist (for nearest-neighbour strips).
"""
import gzip
import os
import re
import struct

import h5py
import numpy as np

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def repository_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def newest_run(root=None):
    """The most recently created run folder under runs/NAME/TIMESTAMP."""
    root = root or os.path.join(repository_root(), "runs")
    candidates = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        for stamp in os.listdir(folder):
            path = os.path.join(folder, stamp)
            if os.path.isfile(os.path.join(path, "metrics.h5")):
                candidates.append((os.path.getmtime(os.path.join(path, "metrics.h5")), path))
    if not candidates:
        raise FileNotFoundError(f"no run folder under {root}; run `workbench run recipes/mae.yaml` first or set WORKBENCH_RUN")
    return max(candidates)[1]


def run_paths(default=None):
    """The run folders to analyse: WORKBENCH_RUN (comma-separated) overrides `default`, which
    falls back to the newest run under runs/."""
    value = os.environ.get("WORKBENCH_RUN") or default
    if not value:
        return [newest_run()]
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    return [os.path.abspath(v.strip()) for v in value]


def load_runs(default=None):
    return [Run(path) for path in run_paths(default)]


def stage_names(kinds):
    """The runner's stage names: the kind, numbered when it repeats (extract, extract_2)."""
    seen, names = {}, []
    for kind in kinds:
        seen[kind] = seen.get(kind, 0) + 1
        names.append(kind if seen[kind] == 1 else f"{kind}_{seen[kind]}")
    return names


class Run:
    """One run folder."""

    def __init__(self, path):
        self.path = path
        self.metrics_path = os.path.join(path, "metrics.h5")
        if not os.path.isfile(self.metrics_path):
            raise FileNotFoundError(f"{path} is not a run folder: it has no metrics.h5")
        with h5py.File(self.metrics_path, "r") as f:
            self.attributes = {k: _plain(v) for k, v in f.attrs.items()}
        self.recipe_text = self.attributes.get("recipe", "")
        # The resolved recipe lists each stage as a top-level "- kind:" line under "stages:".
        stages_part = self.recipe_text.split("\nstages:\n", 1)[-1]
        self.stages = stage_names(re.findall(r"^- ([a-z_]+):", stages_part, flags=re.M))
        self.name = self.attributes.get("recipe_name", os.path.basename(os.path.dirname(path)))
        self.label = f"{self.name}/{os.path.basename(path)}"

    def __repr__(self):
        return f"Run({self.label}: {', '.join(self.stages)})"

    def _table(self, stage, table):
        with h5py.File(self.metrics_path, "r") as f:
            key = f"{stage}/{table}"
            if key not in f:
                return {}
            return {name: f[key][name][:] for name in f[key]}

    def steps(self, stage):
        """Per-step columns of a training stage: step and epoch (counted from 1), global_step
        (TensorBoard's step), loss, lr, images_per_s, wall_time."""
        return self._table(stage, "steps")

    def epochs(self, stage):
        """Per-epoch columns: epoch, loss, seconds, images_per_s (and accuracies for supervised/finetune)."""
        return self._table(stage, "epochs")

    def training_stages(self):
        return [s for s in self.stages if self.steps(s)]

    def results(self, stage):
        """A stage's results (its group's attributes), e.g. test_top1 as a fraction."""
        with h5py.File(self.metrics_path, "r") as f:
            return {k: _plain(v) for k, v in f[stage].attrs.items()} if stage in f else {}

    def confusion(self, stage):
        """(classes, classes) counts, rows true labels, and the class names; None if absent."""
        with h5py.File(self.metrics_path, "r") as f:
            if f"{stage}/confusion" not in f:
                return None
            return f[stage]["confusion"][:], [_plain(n) for n in f[stage]["class_names"][:]]

    def reconstructions(self, stage):
        """{'input', 'masked', 'reconstruction'} (n, C, H, W) pixels in [0, 1]; None if absent."""
        with h5py.File(self.metrics_path, "r") as f:
            key = f"{stage}/reconstructions"
            if key not in f:
                return None
            return {name: f[key][name][:] for name in f[key]}

    def embeddings(self, file="embeddings.h5"):
        """{split: {'features', 'labels', 'indices'}} and the file's attributes."""
        path = file if os.path.isabs(file) else os.path.join(self.path, file)
        with h5py.File(path, "r") as f:
            splits = {name: {k: f[name][k][:] for k in f[name]} for name in f if isinstance(f[name], h5py.Group)}
            attributes = {k: _plain(v) for k, v in f.attrs.items()}
            names = [_plain(n) for n in f["class_names"][:]] if "class_names" in f else None
        return splits, attributes, names


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_idx(path):
    """An IDX file (gzip) as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist_images(split, folder=FASHION_MNIST):
    """All images of a split as (N, 28, 28) uint8."""
    prefix = "train" if split == "train" else "t10k"
    return read_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"))


def save_figure(figure, name, folder=None):
    """Saves a figure as PNG in WORKBENCH_FIGURES (default: figures/ inside the first run) and
    returns the path."""
    folder = folder or os.environ.get("WORKBENCH_FIGURES")
    if folder is None:
        folder = os.path.join(run_paths()[0], "figures")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name + ".png")
    figure.savefig(path, dpi=90, bbox_inches="tight")
    return path


def newest_sweep(root=None):
    """The most recently written sweep folder under runs/NAME/sweep-TIMESTAMP."""
    root = root or os.path.join(repository_root(), "runs")
    candidates = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        folder = os.path.join(root, name)
        for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            path = os.path.join(folder, entry)
            if entry.startswith("sweep-") and os.path.isfile(os.path.join(path, "sweep.h5")):
                candidates.append((os.path.getmtime(os.path.join(path, "sweep.h5")), path))
    if not candidates:
        raise FileNotFoundError(f"no sweep folder under {root}; run `workbench sweep RECIPE --seeds 0-2` first or set WORKBENCH_SWEEP")
    return max(candidates)[1]


def _value(text):
    """A grid value as a number when it reads as one, else the text."""
    try:
        return float(text)
    except ValueError:
        return text


class Sweep:
    """A sweep folder's sweep.h5 (the README's "Sweeps"): the grid, a row per run, and per grid
    point the mean, sd and 95% interval of each result over the seeds."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        with h5py.File(os.path.join(self.path, "sweep.h5"), "r") as f:
            self.status = _plain(f.attrs["status"])
            keys = _plain(f.attrs["grid_keys"])
            self.keys = [k for k in keys.split("\n") if k]
            runs = f["runs"]
            self.seeds = runs["seed"][()]
            self.point_of_run = runs["point"][()]
            self.run_status = [_plain(s) for s in runs["status"][()]]
            self.run_grid = {k: [_value(_plain(v)) for v in runs["grid"][k][()]] for k in self.keys}
            self.run_results = {name: runs["results"][name][()] for name in runs["results"]}
            summary = f["summary"]
            self.labels = [_plain(s) for s in summary["label"][()]]
            self.grid = {k: [_value(_plain(v)) for v in summary["grid"][k][()]] for k in self.keys} if "grid" in summary else {}
            self.summary = {name: {stat: summary["results"][name][stat][()] for stat in summary["results"][name]}
                            for name in summary["results"]}
        self.results = sorted(self.summary)

    @property
    def headline(self):
        """Test accuracies and final losses, the results looked at first."""
        names = [n for n in self.results if n.endswith("test_top1") or n.endswith("final_loss")]
        return names or self.results

    def __repr__(self):
        return f"Sweep({self.path}: {len(self.labels)} grid points, seeds {sorted(set(self.seeds.tolist()))}, {self.status})"


def load_sweep(default=None):
    """WORKBENCH_SWEEP overrides `default`, which falls back to the newest sweep under runs/."""
    return Sweep(os.environ.get("WORKBENCH_SWEEP") or default or newest_sweep())
