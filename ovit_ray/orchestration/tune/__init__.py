"""Ray Tune sweeps: the driver, one trial, the Optuna search, tracking from the driver, transfer grids."""
