"""Learners: pretraining, and the VF and VB methods built on the shared training loop."""
