"""Tests of the icstn library: pure PyTorch, no orchestration."""
