"""Shared fixtures: tiny tasks and models built from configs (no downloads)."""

import pytest
import torch

from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.tasks.planted import PlantedConfig, PlantedTask


@pytest.fixture
def task() -> PlantedTask:
    return PlantedTask(PlantedConfig(vocab=8, prompt_len=3, answer_len=3, horizon=24, test_prompts=64))


@pytest.fixture
def tiny_gpt(task) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=task.vocab_size, max_seq_len=task.cfg.prompt_len + 2 + task.cfg.horizon,
                    n_layer=2, n_head=2, d_model=32)
    model = GPT(cfg).eval()
    with torch.no_grad():  # larger random weights, so greedy outputs depend on the context
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model
