"""The helper's schema knowledge against a run folder the workbench wrote (WORKBENCH_RUN)."""
import os
import unittest

import numpy as np

from workbench_runs import Run, run_paths, stage_names


class RunFolderTests(unittest.TestCase):
    def setUp(self):
        if "WORKBENCH_RUN" not in os.environ:
            self.fail("set WORKBENCH_RUN to a run folder written by `workbench run recipes/mae.yaml`")
        self.run = Run(run_paths()[0])

    def test_stages_follow_the_recipe(self):
        self.assertEqual(self.run.stages[:3], ["pretrain", "linear_probe", "knn"])
        self.assertEqual(stage_names(["extract", "knn", "extract"]), ["extract", "knn", "extract_2"])

    def test_training_tables(self):
        steps = self.run.steps("pretrain")
        self.assertEqual(sorted(steps), ["epoch", "global_step", "images_per_s", "loss", "lr", "step", "wall_time"])
        np.testing.assert_array_equal(steps["step"], np.arange(1, len(steps["step"]) + 1))
        self.assertEqual(steps["step"].dtype, np.int64)
        self.assertIn("loss", self.run.epochs("pretrain"))
        self.assertIn("pretrain", self.run.training_stages())
        self.assertNotIn("knn", self.run.training_stages())

    def test_results_confusion_and_reconstructions(self):
        results = self.run.results("knn")
        self.assertTrue(0 <= results["test_top1"] <= 1)
        counts, names = self.run.confusion("linear_probe")
        self.assertEqual(counts.shape, (10, 10))
        self.assertEqual(names[0], "T-shirt/top")
        self.assertAlmostEqual(np.trace(counts) / counts.sum(), self.run.results("linear_probe")["test_top1"])
        grid = self.run.reconstructions("pretrain")
        self.assertEqual(set(grid), {"input", "masked", "reconstruction", "indices"})
        self.assertEqual(grid["input"].shape[1:], (1, 28, 28))
        self.assertTrue((grid["reconstruction"] >= 0).all() and (grid["reconstruction"] <= 1).all())

    def test_embeddings_and_attributes(self):
        splits, attributes, names = self.run.embeddings()
        self.assertEqual(set(splits), {"train", "test"})
        self.assertEqual(splits["test"]["features"].dtype, np.float32)
        self.assertEqual(len(splits["test"]["features"]), len(splits["test"]["labels"]))
        self.assertEqual(attributes["hidden_layer"], "pooled")
        self.assertEqual(len(names), 10)
        self.assertIn("git_commit", self.run.attributes)
        self.assertEqual(self.run.attributes["status"], "complete")


if __name__ == "__main__":
    unittest.main()


class SweepFolderTests(unittest.TestCase):
    """The helper's reading of sweep.h5 against a sweep the workbench wrote (WORKBENCH_SWEEP)."""

    def setUp(self):
        if "WORKBENCH_SWEEP" not in os.environ:
            self.fail("set WORKBENCH_SWEEP to a sweep folder written by `workbench sweep`")
        from workbench_runs import load_sweep
        self.sweep = load_sweep()

    def test_grid_runs_and_summary_agree(self):
        sweep = self.sweep
        self.assertEqual(sweep.status, "complete")
        points = len(sweep.labels)
        self.assertEqual(len(sweep.point_of_run), points * len(set(sweep.seeds.tolist())))
        for name in sweep.results:
            for p in range(points):
                values = sweep.run_results[name][sweep.point_of_run == p]
                self.assertAlmostEqual(sweep.summary[name]["mean"][p], values.mean(), places=12)
                if len(values) > 1:
                    self.assertAlmostEqual(sweep.summary[name]["sd"][p], values.std(ddof=1), places=12)
        for key in sweep.keys:
            self.assertEqual(len(sweep.grid[key]), points)
