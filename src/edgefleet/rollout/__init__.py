"""Rollouts: waves gated on what the model does on the devices."""
