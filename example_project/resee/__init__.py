"""Resee, the spaced-repetition service resee-perf was extracted from: project settings,
URLs and the ``seed_demo`` command."""
