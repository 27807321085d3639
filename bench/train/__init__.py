"""Training: the LightningModule and epoch callback (module.py), lr schedules (schedule.py), and
`run_trial` (fit.py). Nothing here imports Ray or MLflow, so a trial can be benchmarked on a bare GPU box."""
