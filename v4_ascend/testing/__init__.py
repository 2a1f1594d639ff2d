"""Test support shipped with the package: the simulated device, input cases and tolerances."""
