"""The one training engine shared by both stages: state, jitted step, mesh, checkpoints, logs."""
