"""The tests: tests/icstn (the library), tests/pipeline (its modules), tests/workflow (end to end)."""
