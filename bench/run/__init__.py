"""The run layer: the driver behind `bench run` (driver.py), the per-trial trainable (worker.py), the live
display (progress.py), and ray_exec.py, the one module that imports Ray (Tune trials and Ray Train workers).
Trial expansion is the pure planning layer, bench.trials."""
