"""Shared fixtures: tiny tasks and models built from configs (no downloads)."""

import pytest
import torch

from veriscale.config import load_config
from veriscale.learn.pretrain import PretrainConfig, pretrain
from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.tasks.planted import PlantedConfig, PlantedTask


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run fastest on one thread, and do not fight other processes for the cores
    (with both cores busy, a two-thread op waits for its second thread to be scheduled)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


# A pi_b with a mix of right and wrong answers in ~5 s (d_model 32 does not learn the map g).
TINY_BASE = ["traces=4096", "heldout_traces=64", "task.vocab=8", "task.prompt_len=3", "task.answer_len=3",
             "task.horizon=16", "task.test_prompts=64", "model.n_layer=2", "model.d_model=64", "model.n_head=4",
             "optim.steps=300", "optim.batch_size=32", "optim.lr=5e-3", "optim.warmup=10", "optim.eval_every=300"]


@pytest.fixture(scope="session")
def base(tmp_path_factory, one_thread):
    """Run directory of the tiny pretrained pi_b, shared by the learner tests."""
    return pretrain(load_config(PretrainConfig, None, TINY_BASE + [f"out={tmp_path_factory.mktemp('base')}"]))
