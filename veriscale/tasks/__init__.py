"""Tasks: prompts plus a ground-truth checker of the first-success index."""
