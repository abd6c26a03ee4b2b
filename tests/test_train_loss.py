"""The IOPO loss against hand computations, float64 autograd and the DPO-margin identity (TRACE.md §5)."""

import math

import pytest
import torch

from trace_builder.train.iopo import X1Y1, X1Y2, X2Y1, X2Y2, iopo_loss, iopo_metrics

# policy / reference summed log-probs, columns in PAIRINGS order: x1y1, x1y2, x2y2, x2y1
POLICY = torch.tensor([[-10.0, -14.0, -9.0, -15.0], [-20.0, -18.0, -22.0, -19.0]])
REFERENCE = torch.tensor([[-11.0, -13.0, -10.0, -14.0], [-21.0, -17.5, -21.0, -20.0]])


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_loss_matches_hand_computation():
    beta = 0.1
    out = iopo_loss(POLICY, REFERENCE, beta)
    # row 0: r = 0.1 * [1, -1, 1, -1]; z = 0.1 + 0.1 + 0.1 + 0.1 = 0.4
    # row 1: r = 0.1 * [1, -0.5, -1, 1]; z = 0.1 - 0.1 + 0.05 - 0.1 = -0.05
    expected = [-_log_sigmoid(0.4), -_log_sigmoid(-0.05)]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert out.logits.tolist() == pytest.approx([0.4, -0.05], abs=1e-6)
    assert out.pair1_margin.tolist() == pytest.approx([0.1 + 0.1 + 0.1 + 0.1, 0.15 + 0.0], abs=1e-6)


def test_label_smoothing_is_conservative_dpo():
    eps = 0.2
    out = iopo_loss(POLICY, REFERENCE, 0.1, label_smoothing=eps)
    z = [0.4, -0.05]
    expected = [-(1 - eps) * _log_sigmoid(v) - eps * _log_sigmoid(-v) for v in z]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-6)


def test_loss_is_the_mean_of_both_groups_and_the_sum_of_two_dpo_margins():
    torch.manual_seed(0)
    policy, reference = torch.randn(64, 4) * 5, torch.randn(64, 4) * 5
    beta = 0.3
    out = iopo_loss(policy, reference, beta)
    r = beta * (policy - reference)
    pi1 = (r[:, X1Y1] - r[:, X1Y2]) + (r[:, X1Y1] - r[:, X2Y1])
    pi2 = (r[:, X2Y2] - r[:, X2Y1]) + (r[:, X2Y2] - r[:, X1Y2])
    # the paper's form: -log sigmoid((Pi1 + Pi2) / 2)
    torch.testing.assert_close(out.losses, -torch.nn.functional.logsigmoid((pi1 + pi2) / 2))
    # = the DPO margin of x1 (y1 over y2) plus the DPO margin of x2 (y2 over y1)
    dpo_x1 = r[:, X1Y1] - r[:, X1Y2]
    dpo_x2 = r[:, X2Y2] - r[:, X2Y1]
    torch.testing.assert_close(out.logits, dpo_x1 + dpo_x2)
    # = equally the two input-side margins (x1 over x2 for y1, x2 over x1 for y2)
    torch.testing.assert_close(out.logits, (r[:, X1Y1] - r[:, X2Y1]) + (r[:, X2Y2] - r[:, X1Y2]))
    torch.testing.assert_close(out.pair1_margin, pi1)
    torch.testing.assert_close(out.pair2_margin, pi2)


def _float64_reference_loss(policy, reference, beta, eps):
    r = beta * (policy - reference)
    pi1 = (r[:, 0] - r[:, 1]) + (r[:, 0] - r[:, 3])
    pi2 = (r[:, 2] - r[:, 3]) + (r[:, 2] - r[:, 1])
    z = (pi1 + pi2) / 2
    return (-(1 - eps) * torch.log(torch.sigmoid(z)) - eps * torch.log(torch.sigmoid(-z))).mean()


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_gradient_matches_float64_autograd(eps):
    torch.manual_seed(1)
    policy = (torch.randn(8, 4) * 3).requires_grad_()
    reference = torch.randn(8, 4) * 3
    beta = 0.1
    iopo_loss(policy, reference, beta, eps).losses.mean().backward()

    policy64 = policy.detach().double().requires_grad_()
    _float64_reference_loss(policy64, reference.double(), beta, eps).backward()
    torch.testing.assert_close(policy.grad.double(), policy64.grad, rtol=1e-5, atol=1e-7)

    # closed form: dL/dz = -(1-eps) sigmoid(-z) + eps sigmoid(z); dz/dpolicy = beta * [1, -1, 1, -1]
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    z = beta * ((policy - reference).detach().double() * signs).sum(1)
    dz = (-(1 - eps) * torch.sigmoid(-z) + eps * torch.sigmoid(z)) / len(z)
    closed = dz[:, None] * beta * signs
    torch.testing.assert_close(policy.grad.double(), closed, rtol=1e-5, atol=1e-7)


def test_no_gradient_reaches_the_reference_and_equal_policies_give_log2():
    reference = torch.randn(3, 4)
    out = iopo_loss(reference.clone(), reference, 0.1)
    assert out.losses.tolist() == pytest.approx([math.log(2)] * 3)


def test_metrics_name_both_pairs():
    metrics = iopo_metrics(iopo_loss(POLICY, REFERENCE, 0.1))
    assert metrics["accuracies/pair1"].item() == pytest.approx(1.0)  # Pi1 = 0.4 and 0.15
    assert metrics["accuracies/pair2"].item() == pytest.approx(0.5)  # Pi2 = 0.4 and -0.25
    assert metrics["accuracies/total"].item() == pytest.approx(0.5)
    assert metrics["margins/total"].item() == pytest.approx((0.4 - 0.05) / 2, abs=1e-6)
    assert metrics["rewards/x1y1"].item() == pytest.approx(0.1, abs=1e-6)
