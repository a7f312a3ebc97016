"""CI check, with h5py: a run killed with SIGKILL leaves a metrics.h5 that h5py opens, holding
every step up to the last flush (the workbench flushes every 2 seconds), and a resumed run's
files read as the README's run-folder schema says; TensorBoard's own reader loads its event
files.

    python tools/check_run_outputs.py .build/release/workbench
"""
import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

RECIPE = """
name: ci-check
seed: 5
data:
  train_subset: 4096
  test_subset: 500
checkpoint:
  every_steps: 1000
stages:
  - supervised:
      epochs: 3
      batch_size: 128
  - extract:
      hidden_layer: pooled
"""


def main(workbench):
    with tempfile.TemporaryDirectory() as tmp:
        recipe = os.path.join(tmp, "ci.yaml")
        with open(recipe, "w") as f:
            f.write(RECIPE)
        runs = os.path.join(tmp, "runs")
        process = subprocess.Popen([workbench, "run", recipe, "--runs-dir", runs], stdout=subprocess.PIPE, text=True, bufsize=1)
        started = None
        for line in process.stdout:
            print("  | " + line.rstrip())
            if line.startswith("supervised: 3 epochs"):
                started = time.time()
                break
        assert started is not None, "the run did not start its supervised stage"
        # No checkpoint comes before the stage ends (every_steps 1000): only the timed flush
        # can have put steps on disk.
        time.sleep(6)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, f"the run ended by itself ({process.returncode}) before it could be killed"
        (folder,) = glob.glob(os.path.join(runs, "ci-check", "*"))

        with h5py.File(os.path.join(folder, "metrics.h5"), "r") as f:
            steps = f["supervised/steps/step"][:]
            assert len(steps) > 0, "no step was flushed within 6 seconds"
            assert (steps == np.arange(1, len(steps) + 1)).all(), steps
            assert (f["supervised/steps/global_step"][:] == steps).all()
            for column in ("epoch", "loss", "lr", "images_per_s", "wall_time"):
                assert f[f"supervised/steps/{column}"].shape == steps.shape, column
            assert np.isfinite(f["supervised/steps/loss"][:]).all()
            assert f.attrs["status"] == "running" and f.attrs["seed"] == 5
            assert "name: ci-check" in f.attrs["recipe"] and f.attrs["git_commit"] and f.attrs["workbench_version"]
            print(f"killed after 6 s: h5py reads metrics.h5 with steps 1..{len(steps)}")
        killed = EventAccumulator(folder)
        killed.Reload()
        killed_steps = [e.step for e in killed.Scalars("supervised/loss")]
        # The events are written every 2 seconds too, so the resumed run's restart has duplicates to drop.
        assert killed_steps and killed_steps == list(range(1, len(killed_steps) + 1)), killed_steps[:5]
        print(f"killed after 6 s: TensorBoard reads steps 1..{len(killed_steps)}")

        subprocess.run([workbench, "run", "--resume", folder], check=True)
        with h5py.File(os.path.join(folder, "metrics.h5"), "r") as f:
            assert f.attrs["status"] == "complete"
            steps = f["supervised/steps/step"][:]
            assert (steps == np.arange(1, 3 * (4096 // 128) + 1)).all(), steps
            assert list(f["supervised/epochs/epoch"][:]) == [1, 2, 3]
            top1 = f["supervised"].attrs["test_top1"]
            confusion = f["supervised/confusion"][:]
            assert confusion.shape == (10, 10) and confusion.sum() == 500
            assert abs(np.trace(confusion) / 500 - top1) < 1e-9
            assert [n.decode() for n in f["supervised/class_names"][:2]] == ["T-shirt/top", "Trouser"]
        with h5py.File(os.path.join(folder, "embeddings.h5"), "r") as f:
            assert f["train/features"].shape == (4096, 128) and f["train/features"].dtype == np.float32
            assert f["test/features"].shape == (500, 128)
            assert f["test/labels"].dtype == np.int64 and set(f["test/labels"][:]) <= set(range(10))
            assert len(set(f["train/indices"][:])) == 4096
            assert f.attrs["hidden_layer"] == "pooled"
        assert os.path.exists(os.path.join(folder, "checkpoints", "encoder.safetensors"))
        assert glob.glob(os.path.join(folder, "events.out.tfevents.*"))
        events = EventAccumulator(folder)
        events.Reload()
        tags = set(events.Tags()["scalars"])
        expected = {"supervised/loss", "supervised/lr", "supervised/images_per_s", "supervised/epoch_test_top1", "supervised/epoch_loss"}
        assert expected <= tags, tags
        loss_steps = [e.step for e in events.Scalars("supervised/loss")]
        assert loss_steps == list(range(1, 97)), f"TensorBoard sees steps {loss_steps[:5]}... ({len(loss_steps)}): the restart should drop the killed run's duplicates"
        accuracy = events.Scalars("supervised/epoch_test_top1")
        assert len(accuracy) == 3 and abs(accuracy[-1].value - top1) < 1e-6
        print(f"resumed run complete: test top-1 {100 * top1:.2f}%, files read as documented")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".build/release/workbench")
