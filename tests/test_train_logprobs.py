"""Chunked response log-probs equal the full-logits computation, in value and in gradient."""

import pytest
import torch

from trace_builder.testing.tiny import build_model
from trace_builder.train.iopo import group_logps
from trace_builder.train.logprobs import (
    IGNORE_INDEX,
    FinalHiddenStates,
    naive_sequence_logps,
    output_projection,
    sequence_logps,
)


def _case(seed=0, n=5, t=11, h=8, v=37):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, t, h, generator=g, dtype=torch.float64)
    head = torch.nn.Linear(h, v, bias=False).double()
    labels = torch.randint(0, v, (n, t), generator=g)
    labels[:, :4] = IGNORE_INDEX  # prompt
    labels[1, 8:] = IGNORE_INDEX  # padding
    labels[3, :] = IGNORE_INDEX  # a row with nothing to score
    return hidden, head, labels


@pytest.mark.parametrize("chunk", [1, 3, 16, 10_000])
def test_chunked_equals_naive_in_value_and_gradient(chunk):
    hidden, head, labels = _case()
    h1 = hidden.clone().requires_grad_()
    sums, counts = sequence_logps(h1, labels, head, chunk_tokens=chunk)
    (sums * torch.arange(1, 6, dtype=sums.dtype)).sum().backward()
    grad_hidden, grad_weight = h1.grad.clone(), head.weight.grad.clone()
    head.weight.grad = None

    h2 = hidden.clone().requires_grad_()
    naive, naive_counts = naive_sequence_logps(head(h2), labels)
    (naive * torch.arange(1, 6, dtype=naive.dtype)).sum().backward()

    torch.testing.assert_close(sums.double(), naive.double(), rtol=1e-5, atol=1e-5)
    assert counts.tolist() == naive_counts.tolist()
    assert sums[3].item() == 0.0 and counts[3].item() == 0
    torch.testing.assert_close(grad_hidden, h2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_weight, head.weight.grad, rtol=1e-5, atol=1e-6)


def test_only_chunks_of_labelled_positions_are_projected():
    hidden, head, labels = _case()
    seen = []

    def project(x):
        seen.append(tuple(x.shape))
        return head(x)

    sequence_logps(hidden.requires_grad_(), labels, project, chunk_tokens=4)
    scored = int((labels[:, 1:] != IGNORE_INDEX).sum())
    assert max(rows for rows, _ in seen) <= 4
    assert sum(rows for rows, _ in seen) == scored  # never the prompt or padding positions


def test_softcap_matches_capped_logits():
    hidden, head, labels = _case(seed=2)
    cap = 3.0
    sums, _ = sequence_logps(hidden, labels, head, chunk_tokens=7, softcap=cap)
    naive, _ = naive_sequence_logps(torch.tanh(head(hidden) / cap) * cap, labels)
    torch.testing.assert_close(sums.double(), naive.double(), rtol=1e-5, atol=1e-5)


def test_model_forward_path_matches_model_logits():
    model = build_model("tiny", vocab_size=50, seed=3)
    input_ids = torch.randint(0, 50, (4, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 6:] = 0
    labels = input_ids.clone()
    labels[:, :3] = IGNORE_INDEX
    labels[attention_mask == 0] = IGNORE_INDEX
    hidden = FinalHiddenStates(model)(model, input_ids, attention_mask)
    sums, _ = sequence_logps(hidden, labels, output_projection(model), chunk_tokens=5)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    naive, _ = naive_sequence_logps(logits, labels)
    torch.testing.assert_close(sums, naive.float(), rtol=1e-5, atol=1e-5)

    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    grouped, counts = group_logps(model, batch, chunk_tokens=5)
    assert grouped.shape == (1, 4)
    torch.testing.assert_close(grouped[0], naive.float(), rtol=1e-5, atol=1e-5)
