"""Unit tests of the pipeline modules (and the project's grids, protocol and import layers)."""
