"""Writes Tests/RunnerTests/Fixtures/statistics.json: what scipy.stats says of small samples, for
the workbench's Statistics (mean, sd, 95% interval, Welch's t-test, Student's t distribution).

    python -m venv /tmp/statsvenv && /tmp/statsvenv/bin/pip install scipy numpy
    /tmp/statsvenv/bin/python tools/make_stats_fixtures.py
"""
import json
import os

import numpy as np
import scipy
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "RunnerTests", "Fixtures", "statistics.json")


def summary(x):
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    mean = float(np.mean(x))
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "low": None, "high": None}
    sd = float(np.std(x, ddof=1))
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=stats.sem(x))
    return {"n": n, "mean": mean, "sd": sd, "low": float(low), "high": float(high)}


def main():
    rng = np.random.default_rng(0)
    samples = [
        # The README's supervised seeds: this tool against PyTorch.
        ([88.21, 88.11, 87.84, 88.08, 88.20, 88.44], [88.30, 88.45, 88.23, 88.05, 88.07, 88.13]),
        ([0.8608, 0.8633, 0.8617], [0.8315, 0.8327, 0.8315]),
        ([1.0, 2.0], [3.0, 5.0, 4.0]),
        ([0.5, 0.51, 0.49, 0.52, 0.5], [0.7, 0.2, 0.9, 0.4]),
        (list(rng.normal(0.0, 1.0, 30)), list(rng.normal(0.3, 2.0, 12))),
        (list(rng.normal(5.0, 0.01, 3)), list(rng.normal(5.0, 0.01, 3))),
        (list(rng.normal(0.0, 1.0, 2)), list(rng.normal(10.0, 1.0, 2))),
    ]
    cases = []
    for a, b in samples:
        t, p = stats.ttest_ind(a, b, equal_var=False)
        va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        cases.append({"a": [float(v) for v in a], "b": [float(v) for v in b], "summary_a": summary(a), "summary_b": summary(b),
                      "t": float(t), "df": float(df), "p": float(p)})
    distribution = []
    for df in [1, 1.5, 2, 3, 4.7, 10, 30, 100, 1000]:
        for t in [0.0, 0.1, 0.5, 1.0, 2.0, 3.5, 8.0, 40.0]:
            distribution.append({"df": df, "t": t, "sf": float(stats.t.sf(t, df))})
    quantiles = []
    for df in [1, 2, 3, 4, 5, 9, 29, 1000]:
        for q in [0.6, 0.9, 0.975, 0.995, 0.9999]:
            quantiles.append({"df": df, "q": q, "t": float(stats.t.ppf(q, df))})
    with open(OUT, "w") as f:
        json.dump({"scipy": scipy.__version__, "cases": cases, "distribution": distribution, "quantiles": quantiles}, f, indent=1)
    print(OUT)


if __name__ == "__main__":
    main()
