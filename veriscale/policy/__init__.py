"""Policies: the tiny GPT, its sampling engine and checkpoints."""
