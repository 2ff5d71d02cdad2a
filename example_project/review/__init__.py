"""Spaced repetition: each user's review schedule and history."""
