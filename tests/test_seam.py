"""What learners and commands ask of a policy or of prompts, answered by the interface rather than
by the policy's kind or the prompts' type: the tiny GPT carries its planted task and horizon and
refuses text and LoRA in one line; a transformers policy carries neither; prompts and prompt ids
are selected, measured and padded alike as a tensor (planted) or a list (text)."""

import pytest
import torch

from veriscale.learn.data import join, lm_rows
from veriscale.learn.loop import FullLogits, LogitsOf, eval_nll
from veriscale.learn.samples import horizon_of
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig
from veriscale.tasks.base import id_lengths, id_rollouts, padded_ids, take
from veriscale.tasks.planted import ExpertSampler


def test_the_tiny_gpt_carries_its_task_and_horizon(base):
    policy = load_policy(base)
    assert policy.task.name == "planted" and policy.horizon == policy.task.cfg.horizon == 16
    assert horizon_of(policy) == 16 and not policy.text
    for call in (lambda: policy.decode([1, 2]), lambda: policy.add_lora(4, 16, 0.0, ["q_proj"])):
        with pytest.raises(ValueError) as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="lora_r"):
        policy.add_lora(4, 16, 0.0, ["q_proj"])


def test_a_transformers_policy_carries_no_task_and_no_horizon(lm_dir):
    policy = load_policy(f"hf:{lm_dir}", hf=HFConfig(progress=False))
    assert policy.task is None and policy.horizon is None and policy.text
    assert policy.decode(policy.encode_completion("so we get 42.")[:-1]) == "so we get 42."
    with pytest.raises(ValueError, match="no task horizon"):
        horizon_of(policy)


def test_the_planted_expert_samples_like_the_task_writes(task):
    prompts = task.prompts("test", 8, 0)
    a = ExpertSampler(task).sample(prompts, 20, seed=3)
    b = task.expert(prompts, torch.Generator().manual_seed(3), budget=20)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.counts, b.counts)


def test_take_lengths_and_padding_of_tensors_and_lists():
    rows = torch.tensor([2, 0, 2])
    t = torch.tensor([[1, 2], [3, 4], [5, 6]])
    assert torch.equal(take(t, rows), torch.tensor([[5, 6], [1, 2], [5, 6]]))
    assert take(["a", "b", "c"], rows) == ["c", "a", "c"]
    assert id_lengths(t).tolist() == [2, 2, 2] and id_lengths([[1], [], [1, 2, 3]]).tolist() == [1, 0, 3]
    assert padded_ids(t, 0) is t
    assert padded_ids([[7], [8, 9]], 0).tolist() == [[7, 0], [8, 9]]


def test_join_of_a_tensor_equals_join_of_its_rows_as_lists():
    """Prompts of one length as a (N, P) tensor or as id lists give the same rows; prompts of
    different lengths start each trace where they end, padding after it."""
    ro = id_rollouts([[11, 12, 13], [14], []], 4, 0)
    prompts = torch.tensor([[1, 2], [3, 4], [5, 6]])
    for a, b in zip(join(prompts, ro, 0), join(prompts.tolist(), ro, 0)):
        assert torch.equal(a, b)
    seq, starts, lengths = join([[1], [2, 3, 4], [5, 6]], ro, 0)
    assert seq.tolist() == [[1, 11, 12, 13, 0, 0, 0], [2, 3, 4, 14, 0, 0, 0], [5, 6, 0, 0, 0, 0, 0]]
    assert starts.tolist() == [1, 3, 2] and lengths.tolist() == [3, 1, 0]


def test_full_logits_and_logits_of_give_the_same_nll(base):
    """Both models the loop trains compute the masked next-token NLL: the full logits (pretraining)
    and the head only at loss positions (the learners) agree."""
    policy = load_policy(base)
    prompts = policy.task.prompts("test", 16, 0)
    rows = lm_rows(policy.encode_prompts(prompts), policy.task.expert_traces(prompts, 0), policy.pad_id)
    full = eval_nll(FullLogits(policy.model), *rows, batch_size=5)
    assert full == pytest.approx(eval_nll(LogitsOf(policy), *rows, batch_size=5), rel=1e-5)


def test_evaluate_asks_the_policy_for_its_horizon_and_text(base):
    from click.testing import CliRunner

    from veriscale.cli import main

    def run(*args):
        return CliRunner().invoke(main, ["evaluate", "--policy", str(base), "--prompts", "2", *args])

    over = run("--budgets", "17")
    assert over.exit_code == 2 and over.output.strip() == "error: --budgets: 17 exceeds the policy's horizon 16"
    forced = run("--budgets", "16", "--force-budget")
    assert forced.exit_code == 2 and "budget forcing edits text decoding" in forced.output
    other = run("--budgets", "16", "--task", "gym:basic_arithmetic")
    assert other.exit_code == 2 and "works on its own planted task, not 'gym:basic_arithmetic'" in other.output
