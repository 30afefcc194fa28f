"""Shared fixtures: tiny tasks and models built from configs (no downloads), and a tiny
transformers Llama with a locally trained BPE tokenizer for the text samplers."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from veriscale.tasks.gym import GymConfig, GymTask

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
TINY_BASE = ["traces=4096", "budget_mix=[1.0]", "heldout_traces=64", "task.vocab=8", "task.prompt_len=3", "task.answer_len=3",
             "task.horizon=16", "task.test_prompts=64", "model.n_layer=2", "model.d_model=64", "model.n_head=4",
             "optim.steps=300", "optim.batch_size=32", "optim.lr=5e-3", "optim.warmup=10", "optim.eval_every=300"]


@pytest.fixture(scope="session")
def base(tmp_path_factory, one_thread):
    """Run directory of the tiny pretrained pi_b, shared by the learner tests."""
    return pretrain(load_config(PretrainConfig, None, TINY_BASE + [f"out={tmp_path_factory.mktemp('base')}"]))


HF_WORDS = "the answer is final add subtract plus minus equals so we get total sum of and then".split()
HF_PROMPTS = ["Calculate 3 + 4.", "What is 12 minus 7?", "Add 5 and 9, then subtract 2.", "Total of 1 and 1?",
              "So we get 42."]


@pytest.fixture(scope="module")
def tokenizer():
    """Byte-level BPE with single-digit pre-tokenisation, trained in well under a second."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(HF_WORDS[(i * 7 + j) % len(HF_WORDS)] for j in range(12)) + f" {i} + {i * 3} = {i * 4}."
              for i in range(300)]
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")


@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny random Llama (2 layers, width 32) over `tokenizer`'s vocabulary."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      initializer_range=0.3, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    m = LlamaForCausalLM(cfg).eval()
    # A second EOS id that about half the greedy rows on HF_PROMPTS emit, so rows stop at
    # different steps and the finished-row compaction runs.
    ids = [tokenizer(p).input_ids for p in HF_PROMPTS]
    outs = [m.generate(torch.tensor([i]), max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
            [0, len(i):] for i in ids]
    share = {v: sum(v in o.tolist() for o in outs) for v in range(3, len(tokenizer))}
    m.generation_config.eos_token_id = [tokenizer.eos_token_id, min(share, key=lambda v: abs(share[v] - 2.5))]
    return m


@pytest.fixture(scope="session")
def gym_task():
    return GymTask(GymConfig(grade_workers=1))


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory, gym_task):
    """A saved tiny Llama (2 layers, width 32) and a BPE tokenizer trained on the task's text."""
    problems = gym_task.prompts("train", 150, 0) + gym_task.prompts("test", 40, 0)
    corpus = [p.text for p in problems] + [p.solution for p in problems] + [" Wait Final answer:"] * 5
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=hf_tok.pad_token_id, eos_token_id=hf_tok.eos_token_id, bos_token_id=None)
    out = tmp_path_factory.mktemp("tiny-lm")
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    return out
