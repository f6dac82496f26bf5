"""EGSWTrainer against TRL's GRPOTrainer on the tiny model: exact equivalences and one test per TRL hook used."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import trl
from transformers import AutoModelForCausalLM, AutoTokenizer

from open_r1_egsw.methods.clipping import clip_b_mask, clip_v_mask
from open_r1_egsw.methods.dynamics import token_statistics
from open_r1_egsw.methods.egsw import compute_egsw_weights, normalize_entropy
from open_r1_egsw.methods.shaping import needed_statistics
from open_r1_egsw.training.configs import EGSWConfig
from open_r1_egsw.training.data import load_dataset_any, to_prompt_dataset
from open_r1_egsw.training.trainer import EGSWTrainer

NUM_GENERATIONS = 4
BATCH = 8  # 2 prompts x 4 completions


def length_reward(completions, **kwargs):
    """A reward that varies across completions of a random model, so advantages are not all zero."""
    return [float(len(c[0]["content"]) % 5) for c in completions]


def make_trainer(cls, config_cls, assets, tmp_path, **overrides):
    model = AutoModelForCausalLM.from_pretrained(assets.base_model)
    tokenizer = AutoTokenizer.from_pretrained(assets.base_model)
    dataset = to_prompt_dataset(load_dataset_any(str(assets.data))["train"].select(range(16)), "problem", None)
    options = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=BATCH,
        num_generations=NUM_GENERATIONS,
        max_completion_length=8,
        learning_rate=1e-3,
        report_to="none",
        bf16=False,
        seed=0,
        loss_type="grpo",
    )
    options.update(overrides)
    args = config_cls(**options)
    return cls(model=model, reward_funcs=[length_reward], args=args, train_dataset=dataset, processing_class=tokenizer)


def batch_inputs(trainer):
    rows = [trainer.train_dataset[i] for i in range(BATCH // NUM_GENERATIONS)]
    return [row for row in rows for _ in range(NUM_GENERATIONS)]  # RepeatSampler order: each prompt G times


def step(trainer, seed=123):
    """One generation + loss + backward on a fixed seed; returns (batch, loss, grads)."""
    trainer.model.train()
    trainer.model.zero_grad()
    torch.manual_seed(seed)
    batch = trainer._generate_and_score_completions(batch_inputs(trainer))
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return batch, loss.detach(), grads


def assert_same_step(a, b):
    (_, loss_a, grads_a), (_, loss_b, grads_b) = a, b
    assert torch.equal(loss_a, loss_b), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_uniform_egsw_equals_trl_grpo(tiny_assets, tmp_path, loss_type):
    """use_egsw with alpha 0 and a huge temperature: loss and every gradient equal TRL's GRPOTrainer exactly."""
    reference = step(make_trainer(trl.GRPOTrainer, trl.GRPOConfig, tiny_assets, tmp_path, loss_type=loss_type))
    assert reference[0]["advantages"].abs().sum() > 0  # the comparison is not vacuous
    assert reference[1].item() != 0.0 or loss_type == "grpo"
    egsw = make_trainer(
        EGSWTrainer, EGSWConfig, tiny_assets, tmp_path, loss_type=loss_type,
        use_egsw=True, egsw_alpha=0.0, egsw_temperature=1e12,
    )  # fmt: skip
    result = step(egsw)
    assert result[0]["advantages"].dim() == 2  # the EGSW path really ran: per-token advantages
    assert_same_step(result, reference)


def test_egsw_off_is_trl(tiny_assets, tmp_path):
    """With use_egsw false the batch, loss and gradients are TRL's, key for key."""
    reference = step(make_trainer(trl.GRPOTrainer, trl.GRPOConfig, tiny_assets, tmp_path))
    result = step(make_trainer(EGSWTrainer, EGSWConfig, tiny_assets, tmp_path, use_egsw=False))
    assert result[0].keys() == reference[0].keys()
    for key, value in reference[0].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(result[0][key], value), key
    assert_same_step(result, reference)


def test_non_uniform_egsw_changes_the_loss_by_the_weights(tiny_assets, tmp_path):
    """Real EGSW weights: advantages become A_i * w_{i,t} with w from compute_egsw_weights on the batch."""
    trainer = make_trainer(EGSWTrainer, EGSWConfig, tiny_assets, tmp_path, use_egsw=True, egsw_alpha=1.0,
                           egsw_temperature=0.5)  # fmt: skip
    reference = step(make_trainer(trl.GRPOTrainer, trl.GRPOConfig, tiny_assets, tmp_path))
    batch, loss, _ = step(trainer)
    assert not torch.equal(loss, reference[1])
    # Recompute the weights independently from the policy's entropies on the same completions.
    stats = plain_forward_stats(trainer, batch)
    mask = batch["completion_mask"]
    adv = reference[0]["advantages"]  # same seed, same completions, same rewards
    entropies = normalize_entropy(stats["entropy"], trainer.model.config.vocab_size)
    weights = compute_egsw_weights(adv, entropies, mask, NUM_GENERATIONS, alpha=1.0, temperature=0.5)
    torch.testing.assert_close(batch["advantages"], adv.unsqueeze(1) * weights, atol=1e-5, rtol=1e-5)
    logs = trainer._metrics["train"]
    for key in ("egsw/weight_min", "egsw/weight_max", "egsw/weight_std", "egsw/ess", "egsw/entropy_mean"):
        assert len(logs[key]) == 1, key
    assert 0 < logs["egsw/ess"][0] <= 1


def test_trl_generation_batch_hook(tiny_assets, tmp_path):
    """TRL hook: `_generate_and_score_completions` returns a dict with (B,) advantages and (B, T) masks."""
    batch, _, _ = step(make_trainer(trl.GRPOTrainer, trl.GRPOConfig, tiny_assets, tmp_path))
    assert batch["advantages"].shape == (BATCH,)
    assert batch["completion_mask"].shape == batch["completion_ids"].shape
    assert "old_per_token_logps" not in batch  # aligned steps: TRL runs no old-logps forward


def count_policy_forwards(trainer):
    """Run one generation batch; return it and TRL's `_get_per_token_logps_and_entropies` calls as
    (grad enabled, entropies requested) pairs."""
    calls = []
    original = trl.GRPOTrainer._get_per_token_logps_and_entropies

    def counting(self, *args, **kwargs):
        calls.append((torch.is_grad_enabled(), kwargs.get("compute_entropy", False)))
        return original(self, *args, **kwargs)

    trl.GRPOTrainer._get_per_token_logps_and_entropies = counting
    try:
        trainer.model.train()
        torch.manual_seed(0)
        batch = trainer._generate_and_score_completions(batch_inputs(trainer))
    finally:
        trl.GRPOTrainer._get_per_token_logps_and_entropies = original
    return batch, calls


def plain_forward_stats(trainer, batch):
    """The reference: a plain logits forward of the policy on the batch, token_statistics on its (B, T, V) logits."""
    completion_ids, mask = batch["completion_ids"], batch["completion_mask"]
    input_ids = torch.cat([batch["prompt_ids"], completion_ids], dim=1)
    attention = torch.cat([batch["prompt_mask"], mask], dim=1)
    with torch.no_grad():
        logits = trainer.model(input_ids=input_ids, attention_mask=attention).logits[:, -mask.size(1) - 1 : -1]
    return token_statistics(logits, completion_ids, temperature=trainer.temperature)


METHODS = {
    "egsw": dict(use_egsw=True),
    "clip_b": dict(entropy_clip="clip_b"),
    "clip_v": dict(entropy_clip="clip_v"),
    "egsw+clip_b": dict(use_egsw=True, entropy_clip="clip_b"),
    "log_entropy_dynamics": dict(log_entropy_dynamics=True),
}
# source -> (config overrides that make it apply, TRL policy forwards expected in one generation batch)
SOURCES = {
    "generation": (dict(), []),  # aligned steps, transformers generation: no policy forward at all
    "trl-forward": (dict(num_iterations=2), [(False, True)]),  # TRL's own old-logps forward, and nothing else
    "extra-forward": (dict(), [(False, True)]),  # one extra no-grad forward (source forced below)
}


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("method", list(METHODS))
def test_token_statistics_from_each_source_equal_a_plain_forward(tiny_assets, tmp_path, method, source):
    """Every method's statistics (H; log p_k, S; E_p[S]) from each source equal a plain logits forward (1e-5, fp32),
    and only the expected policy forwards run: none from generation, TRL's own one, or exactly one extra."""
    overrides, expected_calls = SOURCES[source]
    # temperature 0.1: the random model's p is far from uniform there (S and E_p[S] about 0.2, not 1e-3)
    trainer = make_trainer(EGSWTrainer, EGSWConfig, tiny_assets, tmp_path, temperature=0.1, max_completion_length=12,
                           **METHODS[method], **overrides)  # fmt: skip
    if source == "extra-forward":  # what vLLM without IS correction / tools / continuous batching select
        trainer._stats_source = lambda: "extra-forward"
    assert trainer._stats_source() == source
    used = []
    sampling_token_stats = trainer._sampling_token_stats
    trainer._sampling_token_stats = lambda batch, mode: used.append(sampling_token_stats(batch, mode)) or used[-1]
    batch, calls = count_policy_forwards(trainer)
    assert calls == expected_calls
    (stats,) = used
    # in the one fixed order every process packs them (shaping.STATISTICS), never a set's iteration order
    assert tuple(stats) == needed_statistics(trainer.args.use_egsw, trainer.args.entropy_clip,
                                             trainer.args.log_entropy_dynamics)  # fmt: skip
    reference = plain_forward_stats(trainer, batch)
    mask = batch["completion_mask"].bool()
    for key in ("entropy", "S", "S_baseline"):  # 1e-5 is a small fraction of every value compared: not vacuous
        assert reference[key][mask].abs().mean() > 0.05, key
    for key, value in stats.items():
        assert value.shape == mask.shape, key
        torch.testing.assert_close(value[mask], reference[key][mask], atol=1e-5, rtol=1e-5, msg=key)


def test_generation_recorder_reduces_steps_in_blocks_without_changing_a_value(tiny_assets):
    """The generation hook keeps decoding steps and reduces them k at a time (k from its fp32 work-space budget):
    k = 1, 3 and all steps give the same statistics (bitwise) and equal a plain forward of the sampled sequence (1e-5),
    including the last step, whose token comes from the returned ids."""
    from open_r1_egsw.training.token_stats import GenerationRecorder

    model = AutoModelForCausalLM.from_pretrained(tiny_assets.base_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_assets.base_model, padding_side="left")
    prompts = tokenizer(["1 + 1 =", "What is 12 - 5?", "3 * 4", "9"], return_tensors="pt", padding=True)
    steps, temperature = 10, 0.1  # 0.1: p far from uniform, S and E_p[S] not ~1e-3
    step_bytes = 4 * model.config.vocab_size * 4 * GenerationRecorder._FP32_COPIES  # B x V x fp32 x copies
    results = {}
    for budget, blocks in ((0, steps), (3 * step_bytes, 4), (10**12, 1)):
        recorder = GenerationRecorder(temperature, ("entropy", "logp", "S_baseline"), budget_bytes=budget)
        handle = recorder.register(model)
        torch.manual_seed(0)
        out = model.generate(**prompts, do_sample=True, temperature=temperature, top_k=0, max_new_tokens=steps,
                             min_new_tokens=steps, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        handle.remove()
        completion = out[:, prompts["input_ids"].size(1) :]
        assert completion.size(1) == steps
        results[budget] = recorder.result(completion)
        assert len(recorder.blocks) == blocks
    one_by_one = results[0]
    for stats in results.values():
        assert stats.keys() == one_by_one.keys() and all(torch.equal(stats[k], one_by_one[k]) for k in stats)
    with torch.no_grad():
        logits = model(input_ids=out, attention_mask=torch.cat([prompts["attention_mask"],
                                                                torch.ones_like(completion)], 1)).logits  # fmt: skip
    reference = token_statistics(logits[:, -steps - 1 : -1], completion, temperature=temperature)
    assert reference["S_baseline"].abs().mean() > 0.05
    for key in ("entropy", "logp", "S_baseline"):
        torch.testing.assert_close(one_by_one[key], reference[key], atol=1e-5, rtol=1e-5, msg=key)


def test_fused_head_capture_in_the_compact_layout(tiny_assets, tmp_path, monkeypatch):
    """On Triton devices TRL's fused head scores only the valid positions (compact rows, scattered back): E_p[S]
    from that layout equals the plain forward too. Only TRL's layout decision is replaced (no Triton on CPU)."""
    monkeypatch.setattr(trl.trainer.utils, "_use_triton", lambda device: True)
    trainer = make_trainer(EGSWTrainer, EGSWConfig, tiny_assets, tmp_path, temperature=0.1, max_completion_length=12,
                           entropy_clip="clip_v", num_iterations=2)  # fmt: skip
    batch, calls = count_policy_forwards(trainer)
    mask = batch["completion_mask"].bool()
    assert calls == [(False, True)]  # compact rows: completion tokens only (the prompt's labels are -100)
    reference = plain_forward_stats(trainer, batch)
    baseline = trainer._captured_stats["S_baseline"]
    torch.testing.assert_close(baseline[mask], reference["S_baseline"][mask], atol=1e-5, rtol=1e-5)


def test_trl_policy_forward_is_captured(tiny_assets, tmp_path):
    """TRL hook: when TRL runs its old-logps forward (num_iterations 2), its entropies are reused, no extra pass."""
    trainer = make_trainer(EGSWTrainer, EGSWConfig, tiny_assets, tmp_path, use_egsw=True, num_iterations=2)
    assert trainer._trl_runs_policy_forward() and trainer._stats_source() == "trl-forward"
    batch, calls = count_policy_forwards(trainer)
    assert "old_per_token_logps" in batch  # TRL did run its forward ...
    assert calls == [(False, True)]  # ... once, with entropies requested by our capture, and nothing else ran
    recomputed = trainer._extra_forward_stats(batch, "train", {"entropy"})
    torch.testing.assert_close(trainer._captured_stats["entropy"], recomputed["entropy"])
    torch.testing.assert_close(batch["old_per_token_logps"], recomputed["logp"])


def test_loss_type_without_surrogate_is_rejected():
    """use_egsw with a loss type whose loss is not the clipped surrogate fails at config time."""
    with pytest.raises(ValueError, match="loss_type='sapo' cannot be combined with use_egsw"):
        EGSWConfig(output_dir="unused", use_egsw=True, loss_type="sapo", report_to="none", bf16=False)


def test_controller_state_round_trips_through_a_checkpoint(tiny_assets, tmp_path):
    """The adaptive controller's state is saved with a checkpoint and restored exactly on resume."""
    trainer = make_trainer(
        EGSWTrainer, EGSWConfig, tiny_assets, tmp_path, use_egsw=True, egsw_controller="entropy",
        egsw_controller_param="alpha", egsw_controller_target=0.9, max_steps=2, save_steps=2, save_strategy="steps",
    )  # fmt: skip
    trainer.train()
    alpha_after = trainer.egsw_alpha
    assert alpha_after != 0.3  # the controller moved alpha
    checkpoint = Path(trainer.args.output_dir) / "checkpoint-2"
    saved = json.loads((checkpoint / "egsw_controller_state.json").read_text())
    resumed = make_trainer(
        EGSWTrainer, EGSWConfig, tiny_assets, tmp_path, use_egsw=True, egsw_controller="entropy",
        egsw_controller_param="alpha", egsw_controller_target=0.9, max_steps=2,
    )  # fmt: skip
    assert resumed.egsw_alpha == 0.3
    resumed.create_optimizer_and_scheduler(num_training_steps=2)
    resumed._load_optimizer_and_scheduler(str(checkpoint))  # what Trainer.train(resume_from_checkpoint=...) calls
    assert resumed.egsw_controller.state_dict() == saved
    assert resumed.egsw_alpha == alpha_after
    fresh = copy.deepcopy(resumed.egsw_controller)
    assert fresh.update(0.5) == resumed.egsw_controller.update(0.5)


def test_clip_b_composes_with_egsw(tiny_assets, tmp_path):
    """Clip_B keep-mask times EGSW weights: advantages = A * w * keep, with S from the policy's own log p and H."""

    trainer = make_trainer(EGSWTrainer, EGSWConfig, tiny_assets, tmp_path, use_egsw=True, egsw_alpha=0.5,
                           entropy_clip="clip_b", entropy_clip_mu=0.5)  # fmt: skip
    reference = step(make_trainer(trl.GRPOTrainer, trl.GRPOConfig, tiny_assets, tmp_path))
    batch, _, _ = step(trainer)
    adv, mask = reference[0]["advantages"], batch["completion_mask"]
    stats = plain_forward_stats(trainer, batch)
    keep = clip_b_mask(stats["S"], adv, mask, mu=0.5)
    assert (~keep & mask.bool() & (adv.unsqueeze(1) < 0)).any()  # mu 0.5 really drops some tokens
    assert (keep | ~mask.bool() | (adv.unsqueeze(1) < 0)).all()  # never a token with A >= 0
    entropies = normalize_entropy(stats["entropy"], trainer.model.config.vocab_size)
    weights = compute_egsw_weights(adv, entropies, mask, NUM_GENERATIONS, alpha=0.5, temperature=1.0)
    torch.testing.assert_close(batch["advantages"], adv.unsqueeze(1) * weights, atol=1e-5, rtol=1e-5)
    assert torch.equal(batch["tool_mask"].bool(), keep)  # dropped tokens leave the loss through its mask
    assert batch["num_items_in_batch"].item() == keep.sum().item()
    dropped = trainer._metrics["train"]["entropy_dynamics/clip_frac"][0]
    assert dropped == pytest.approx(((~keep) & mask.bool()).sum().item() / mask.sum().item())


def test_clip_v_without_egsw_and_entropy_dynamics_logging(tiny_assets, tmp_path):
    """Clip_V alone masks A (no weights); the dynamics diagnostics, predicted and measured dH, are logged."""
    trainer = make_trainer(EGSWTrainer, EGSWConfig, tiny_assets, tmp_path, entropy_clip="clip_v", entropy_clip_mu=0.1,
                           entropy_clip_max_frac=0.05, log_entropy_dynamics=True)  # fmt: skip
    reference = step(make_trainer(trl.GRPOTrainer, trl.GRPOConfig, tiny_assets, tmp_path))
    batch, _, _ = step(trainer)
    adv, mask = reference[0]["advantages"], batch["completion_mask"]
    stats = plain_forward_stats(trainer, batch)
    keep = clip_v_mask(stats["S"], stats["S_baseline"], adv, mask, mu=0.1, max_frac=0.05)
    assert 0 < ((~keep) & mask.bool()).sum() <= int(0.05 * mask.sum())
    assert torch.equal(batch["advantages"], adv)  # no weights: TRL's (B,) advantages, untouched
    assert torch.equal(batch["tool_mask"].bool(), keep) and batch["num_items_in_batch"].item() == keep.sum().item()
    # A second generation batch measures the entropy change of the first one's update.
    trainer._generate_and_score_completions(batch_inputs(trainer))
    logs = trainer._metrics["train"]
    for key in ("entropy_dynamics/S_mean", "entropy_dynamics/S_minus_baseline_mean", "entropy_dynamics/clip_frac",
                "entropy_dynamics/predicted_dH", "entropy_dynamics/measured_dH"):  # fmt: skip
        assert logs[key] and all(math.isfinite(v) for v in logs[key]), key


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_dropped_tokens_leave_the_loss_normalisation_and_the_kl_term(tiny_assets, tmp_path, loss_type):
    """Clip_B's dropped tokens leave TRL's loss as the authors' response-mask edit does, computed by hand: out of the
    token counts of grpo (per completion), bnpo and dapo (per batch), and out of the KL term. dr_grpo divides by a
    constant (N * max_completion_length), so there a dropped token only loses its own terms."""
    beta, max_len = 0.1, 8
    trainer = make_trainer(EGSWTrainer, EGSWConfig, tiny_assets, tmp_path, loss_type=loss_type, beta=beta,
                           entropy_clip="clip_b", entropy_clip_mu=0.5)  # fmt: skip
    trainer.model.train()
    torch.manual_seed(123)
    batch = trainer._generate_and_score_completions(batch_inputs(trainer))
    valid, keep = batch["completion_mask"].bool(), batch["tool_mask"].bool()
    assert (valid & ~keep).any() and keep.any()  # some tokens dropped, some kept: the check is not vacuous
    logp = plain_forward_stats(trainer, batch)["logp"]
    gen = torch.Generator().manual_seed(0)
    batch["ref_per_token_logps"] = logp + 0.3 * torch.randn(logp.shape, generator=gen)  # a KL that is not 0
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_loss(trainer.model, batch).detach()

    delta = batch["ref_per_token_logps"] - logp
    per_token = -batch["advantages"].unsqueeze(1) + beta * (delta.exp() - delta - 1)  # on-policy: ratio 1
    kept = keep.double()
    if loss_type == "grpo":
        expected = ((per_token * kept).sum(1) / kept.sum(1).clamp(min=1)).mean()
    elif loss_type == "dr_grpo":
        expected = (per_token * kept).sum() / (kept.size(0) * max_len)
    else:  # bnpo, dapo: one process, one micro-batch: both divide by the kept tokens of the batch
        expected = (per_token * kept).sum() / kept.sum()
    torch.testing.assert_close(loss.double(), expected.double(), rtol=1e-5, atol=1e-6)
    everything = (per_token * valid).sum() / valid.sum()  # what keeping them in the count would give
    assert loss_type in ("grpo", "dr_grpo") or not torch.isclose(loss.double(), everything.double(), rtol=1e-3)
