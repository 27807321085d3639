"""Trial expansion (trials.py, pure), Ray execution (ray_exec.py, the only Ray imports), the per-trial
trainable (worker.py) and the driver behind `bench run` (driver.py)."""
