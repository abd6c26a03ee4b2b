"""Summed log-probs of the response tokens, projected through the LM head chunk by chunk."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def _chunk_token_logps(
    hidden: torch.Tensor, targets: torch.Tensor, project: Callable[[torch.Tensor], torch.Tensor], softcap: float | None
) -> torch.Tensor:
    # fp32 logits live only for this chunk; under checkpoint they are recomputed in backward
    # instead of being kept alive for the whole batch.
    logits = project(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def response_token_logps(
    hidden_states: torch.Tensor,
    labels: torch.Tensor,
    project: Callable[[torch.Tensor], torch.Tensor],
    *,
    chunk_tokens: int = 256,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the labelled (response) tokens, without full-vocabulary logits for the batch.

    `hidden_states` [N, T, H] are the model's final hidden states (after the last norm), `labels`
    [N, T] hold the token ids to score, IGNORE_INDEX elsewhere (prompt, padding); position t
    predicts labels[t + 1]. Only labelled positions are projected, `chunk_tokens` at a time,
    each chunk under activation checkpointing, so at most one chunk of fp32 logits
    [chunk_tokens, V] exists at any moment, forward or backward.

    Returns (token_logps [M], row_index [M], counts [N]) over the M labelled positions.
    """
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != IGNORE_INDEX
    row_index = mask.nonzero(as_tuple=True)[0]
    selected_hidden = hidden_states[:, :-1][mask]
    targets = shifted_labels[mask]
    pieces = []
    for start in range(0, targets.numel(), chunk_tokens):
        h = selected_hidden[start : start + chunk_tokens]
        t = targets[start : start + chunk_tokens]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_chunk_token_logps, h, t, project, softcap, use_reentrant=False))
        else:
            pieces.append(_chunk_token_logps(h, t, project, softcap))
    if pieces:
        token_logps = torch.cat(pieces)
    else:
        token_logps = hidden_states.new_zeros(0, dtype=torch.float32)
    counts = mask.sum(dim=1)
    return token_logps, row_index, counts


def sequence_logps(
    hidden_states: torch.Tensor,
    labels: torch.Tensor,
    project: Callable[[torch.Tensor], torch.Tensor],
    *,
    chunk_tokens: int = 256,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of response-token log-probs per row, and the number of response tokens per row (both [N])."""
    token_logps, row_index, counts = response_token_logps(
        hidden_states, labels, project, chunk_tokens=chunk_tokens, softcap=softcap
    )
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device)
    sums = sums.index_add(0, row_index, token_logps)
    return sums, counts


def naive_sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same sums from full logits [N, T, V]: the plain computation the chunked one must match."""
    logits = logits[:, :-1].float()
    shifted = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    safe = shifted.masked_fill(~mask, 0)
    per_token = torch.log_softmax(logits, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (per_token * mask).sum(dim=1), mask.sum(dim=1)


class FinalHiddenStates:
    """Captures the decoder's final hidden states during a full model forward.

    The model is called as a whole (so DeepSpeed/FSDP hooks on the root module run) with
    `logits_to_keep=1`, which keeps its own logits to one position; the decoder's output,
    caught by a forward hook, is what `sequence_logps` projects in chunks.
    """

    def __init__(self, model: torch.nn.Module):
        self.decoder = _decoder_of(model)
        self.captured: torch.Tensor | None = None

    def _hook(self, _module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else getattr(output, "last_hidden_state", output)
        self.captured = hidden

    def __call__(self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        handle = self.decoder.register_forward_hook(self._hook)
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        finally:
            handle.remove()
        hidden, self.captured = self.captured, None
        if hidden is None:
            raise RuntimeError("the decoder's forward hook did not fire; cannot read final hidden states")
        return hidden


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    # Unwrap DDP/DeepSpeed (.module) and PEFT (.get_base_model()) to the transformers model.
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def _decoder_of(model: torch.nn.Module) -> torch.nn.Module:
    base = _base_model(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is None:
        raise ValueError(f"{type(base).__name__} has no decoder (get_decoder()); a causal LM is required")
    return decoder


def output_projection(model: torch.nn.Module) -> torch.nn.Module:
    """The LM head module (called as a module so ZeRO-3 gathers its weight and LoRA on it applies)."""
    return _base_model(model).get_output_embeddings()


def final_logit_softcap(model: torch.nn.Module) -> float | None:
    """Gemma-2 style tanh soft-capping of the final logits, when the model's config asks for it."""
    config = _base_model(model).config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return getattr(config, "final_logit_softcapping", None)
