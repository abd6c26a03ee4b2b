"""IOPO (TRACE.md §5): the loss, the four-sequence collator and a small transformers.Trainer subclass."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from trace_builder.train.data import PAIRINGS, IOPOExample
from trace_builder.train.logprobs import (
    IGNORE_INDEX,
    FinalHiddenStates,
    final_logit_softcap,
    output_projection,
    sequence_logps,
)

# Column positions of the four pairings in every [B, 4] log-prob tensor.
X1Y1, X1Y2, X2Y2, X2Y1 = (PAIRINGS.index(p) for p in PAIRINGS)


@dataclass
class IOPOLossOutput:
    losses: torch.Tensor  # [B]
    rewards: torch.Tensor  # [B, 4] beta * (policy - reference), PAIRINGS order, detached
    pair1_margin: torch.Tensor  # [B] Pi1, detached
    pair2_margin: torch.Tensor  # [B] Pi2, detached
    logits: torch.Tensor  # [B] z = (Pi1 + Pi2) / 2, detached


def iopo_loss(
    policy_logps: torch.Tensor, reference_logps: torch.Tensor, beta: float, label_smoothing: float = 0.0
) -> IOPOLossOutput:
    """The IOPO loss per group from summed response log-probs [B, 4] (PAIRINGS order).

    With r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)):
      Pi1 = [r(x1,y1) - r(x1,y2)] + [r(x1,y1) - r(x2,y1)]   (group around (x1, y1))
      Pi2 = [r(x2,y2) - r(x2,y1)] + [r(x2,y2) - r(x1,y2)]   (group around (x2, y2))
      z   = (Pi1 + Pi2) / 2 = r(x1,y1) + r(x2,y2) - r(x1,y2) - r(x2,y1)
      loss = -log sigmoid(z)
    With label smoothing eps (conservative DPO): (1 - eps) * -log sigmoid(z) + eps * -log sigmoid(-z).
    """
    rewards = beta * (policy_logps - reference_logps)
    r11, r12, r22, r21 = rewards[:, X1Y1], rewards[:, X1Y2], rewards[:, X2Y2], rewards[:, X2Y1]
    z = r11 + r22 - r12 - r21
    losses = -(1.0 - label_smoothing) * F.logsigmoid(z)
    if label_smoothing:
        losses = losses - label_smoothing * F.logsigmoid(-z)
    pair1 = (r11 - r12) + (r11 - r21)
    pair2 = (r22 - r21) + (r22 - r12)
    return IOPOLossOutput(losses, rewards.detach(), pair1.detach(), pair2.detach(), z.detach())


def iopo_metrics(out: IOPOLossOutput) -> dict[str, torch.Tensor]:
    """Per-batch means to log. pair1 = the x1 group (y1 over y2 for x1, and x1 over x2 for y1); pair2 alike for x2."""
    r = out.rewards
    metrics = {f"rewards/{name}": r[:, i].mean() for i, name in enumerate(PAIRINGS)}
    metrics.update(
        {
            "rewards/chosen": (r[:, X1Y1] + r[:, X2Y2]).mean() / 2,
            "rewards/rejected": (r[:, X1Y2] + r[:, X2Y1]).mean() / 2,
            "margins/pair1": out.pair1_margin.mean(),
            "margins/pair2": out.pair2_margin.mean(),
            "margins/total": out.logits.mean(),
            "accuracies/pair1": (out.pair1_margin > 0).float().mean(),
            "accuracies/pair2": (out.pair2_margin > 0).float().mean(),
            "accuracies/total": (out.logits > 0).float().mean(),
            # the plain DPO view of each instruction: does the right response win?
            "accuracies/x1_prefers_y1": (r[:, X1Y1] > r[:, X1Y2]).float().mean(),
            "accuracies/x2_prefers_y2": (r[:, X2Y2] > r[:, X2Y1]).float().mean(),
        }
    )
    return metrics


class IOPOCollator:
    """B groups -> 4B right-padded rows laid out in blocks [x1y1 * B, x1y2 * B, x2y2 * B, x2y1 * B].

    labels are IGNORE_INDEX on prompt tokens and padding. When `reference_logps` (id -> 4
    floats) is filled, the batch also carries them as `ref_logps` [B, 4].
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.reference_logps: dict[str, tuple[float, float, float, float]] | None = None

    def __call__(self, examples: list[IOPOExample]) -> dict[str, Any]:
        rows = [ex.sequences[k] for k in range(len(PAIRINGS)) for ex in examples]
        width = max(len(p) + len(c) for p, c in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prompt, completion) in enumerate(rows):
            n_prompt, n = len(prompt), len(prompt) + len(completion)
            input_ids[i, :n] = torch.tensor(prompt + completion, dtype=torch.long)
            labels[i, n_prompt:n] = torch.tensor(completion, dtype=torch.long)
            attention_mask[i, :n] = 1
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        batch["ids"] = [ex.id for ex in examples]
        if self.reference_logps is not None:
            batch["ref_logps"] = torch.tensor([self.reference_logps[ex.id] for ex in examples], dtype=torch.float32)
        return batch


def group_logps(
    model: torch.nn.Module, batch: Mapping[str, Any], chunk_tokens: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over the 4B rows -> summed response log-probs [B, 4] and response token counts [B, 4]."""
    hidden = FinalHiddenStates(model)(model, batch["input_ids"], batch["attention_mask"])
    sums, counts = sequence_logps(
        hidden,
        batch["labels"],
        output_projection(model),
        chunk_tokens=chunk_tokens,
        softcap=final_logit_softcap(model),
    )
    n_groups = sums.shape[0] // len(PAIRINGS)
    return sums.view(len(PAIRINGS), n_groups).T, counts.view(len(PAIRINGS), n_groups).T


def disable_dropout(model: torch.nn.Module) -> None:
    """Policy and reference must see the same function; dropout would make their log-probs differ by noise."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


class IOPOTrainer(Trainer):
    """transformers.Trainer with the IOPO loss; the reference is precomputed (ref_logps in the batch)
    or, for a PEFT model, the same model with its adapter disabled."""

    def __init__(
        self,
        *args: Any,
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        sft_weight: float = 0.0,
        reference: str = "precompute",
        logprob_chunk_tokens: int = 256,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.sft_weight = sft_weight
        self.reference = reference
        self.logprob_chunk_tokens = logprob_chunk_tokens
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.tokens_seen = 0  # non-padding tokens through the policy forward, this process
        # compute_loss returns a batch mean, so the Trainer must divide by the accumulation steps itself.
        self.model_accepts_loss_kwargs = False
        if reference == "adapter" and not hasattr(self._unwrapped(), "disable_adapter"):
            raise ValueError("reference='adapter' needs a PEFT model; precompute the reference instead")

    def _unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def reference_logps(self, model: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        if "ref_logps" in batch:
            return batch["ref_logps"].to(torch.float32)
        if self.reference != "adapter":
            raise RuntimeError("the batch has no precomputed ref_logps; run precompute_reference() before train()")
        with torch.no_grad(), self._unwrapped().disable_adapter():
            ref, _ = group_logps(model, batch, self.logprob_chunk_tokens)
        return ref

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        policy, counts = group_logps(model, inputs, self.logprob_chunk_tokens)
        if model.training:
            self.tokens_seen += int(inputs["attention_mask"].sum())
        reference = self.reference_logps(model, inputs).to(policy.device)
        out = iopo_loss(policy, reference, self.beta, self.label_smoothing)
        loss = out.losses.mean()
        metrics = iopo_metrics(out)
        if self.sft_weight:
            chosen = [X1Y1, X2Y2]
            nll = -policy[:, chosen].sum() / counts[:, chosen].sum().clamp(min=1)
            loss = loss + self.sft_weight * nll
            metrics["nll/chosen"] = nll.detach()
        metrics["loss/iopo"] = out.losses.detach().mean()
        for i, name in enumerate(PAIRINGS):
            metrics[f"logps/{name}"] = policy[:, i].detach().mean()
        mode = "train" if model.training else "eval"
        for name, value in metrics.items():
            self._metrics[f"{mode}/{name}"].append(self.accelerator.gather_for_metrics(value.reshape(1)).mean().item())
        return (loss, {"policy_logps": policy.detach()}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for key, values in list(self._metrics.items()):
            if key.startswith(mode + "/") and values:
                logs[prefix + key[len(mode) + 1 :]] = sum(values) / len(values)
                del self._metrics[key]
        super().log(logs, start_time)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    @torch.no_grad()
    def precompute_reference(self, dataset: list[IOPOExample], batch_size: int) -> dict[str, tuple[float, ...]]:
        """Reference log-probs of every group with the model as it is now (before any step).

        Each process scores its shard; the results are gathered so every process holds all of them.
        """
        model = self._unwrapped()
        # Before train() a DeepSpeed/FSDP model is still whole on the CPU: score it whole on this device.
        if next(model.parameters()).device != self.accelerator.device:
            model.to(self.accelerator.device)
        was_training = model.training
        model.eval()
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=False, collate_fn=self.data_collator
        )
        loader = self.accelerator.prepare_data_loader(loader)
        found: list[tuple[str, list[float]]] = []
        adapter_off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
        with adapter_off:
            for batch in loader:
                ids = batch.pop("ids")
                batch.pop("ref_logps", None)
                batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                logps, _ = group_logps(model, batch, self.logprob_chunk_tokens)
                found.extend(zip(ids, logps.float().cpu().tolist()))
        model.train(was_training)
        if self.accelerator.num_processes > 1:
            found = self.accelerator.gather_object(found)
        return {id_: tuple(values) for id_, values in found}

    def _remove_unused_columns(self, dataset, description=None):
        return dataset

    def _set_signature_columns_if_needed(self):
        self._signature_columns = ["input_ids", "attention_mask", "labels", "ref_logps", "ids"]
