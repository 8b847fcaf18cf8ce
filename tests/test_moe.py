"""The sparse MoE layer: top-k routing, gates, load balancing (aux loss and bias), sizes."""

from __future__ import annotations

import pytest
import torch

from onerec.model import MoE, OneRec, OneRecConfig

SIZES = [4, 4, 4]


def moe_config(**overrides) -> OneRecConfig:
    return OneRecConfig.preset("tiny", SIZES, **{"n_experts": 4, "top_k": 2, **overrides})


@pytest.mark.parametrize("balance", ["aux_loss", "bias", "none"])
def test_each_token_goes_to_exactly_k_experts_with_gates_summing_to_one(balance):
    torch.manual_seed(0)
    moe = MoE(moe_config(moe_balance=balance))
    if balance == "bias":
        moe.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 10.0]))  # expert 3 wins every choice
    x = torch.randn(50, 32)
    experts, gates, logits = moe.route(x)
    assert experts.shape == gates.shape == (50, 2)
    assert (experts.sort(dim=1).values.diff(dim=1) > 0).all()  # k distinct experts per token
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(50))
    assert (gates > 0).all()
    if balance == "bias":
        assert (experts == 3).any(dim=1).all()
        # the bias picks experts; the gates still come from the unbiased logits
        torch.testing.assert_close(gates, logits.gather(1, experts).softmax(dim=1))
    else:
        expected = logits.topk(2, dim=1).indices
        assert torch.equal(experts.sort(1).values, expected.sort(1).values)
    # the grouped dispatch equals a plain per-token sum over the chosen experts
    out = moe(x)
    manual = torch.stack([
        sum(g * moe.experts[int(e)](x[i]) for e, g in zip(experts[i], gates[i]))
        for i in range(len(x))
    ])  # fmt: skip
    torch.testing.assert_close(out, manual, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(moe.load.sum(), torch.tensor(1.0))


def test_dense_and_moe_decoders_at_equal_active_parameters():
    moe_cfg = moe_config(d_ff=64)  # experts of width 64 // 2 = 32: two of them = one dense FFN
    dense_cfg = moe_cfg.replace(n_experts=0)
    with torch.device("meta"):
        moe, dense = OneRec(moe_cfg), OneRec(dense_cfg)
    router = moe_cfg.decoder_layers * moe_cfg.d_model * moe_cfg.n_experts
    assert moe.num_active_parameters() - dense.num_active_parameters() == router
    assert moe.num_parameters() > dense.num_parameters()


def test_aux_loss_is_positive_and_differentiable():
    torch.manual_seed(0)
    moe = MoE(moe_config(moe_balance="aux_loss"))
    moe(torch.randn(64, 32))
    aux = moe.aux_loss
    assert aux.item() > 0 and aux.requires_grad
    aux.backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0
    moe_bias = MoE(moe_config(moe_balance="bias"))
    moe_bias(torch.randn(8, 32))
    assert moe_bias.aux_loss.item() == 0.0


def test_bias_update_moves_towards_equal_load():
    moe = MoE(moe_config(moe_balance="bias"))
    moe.pending_load.copy_(torch.tensor([5.0, 3.0, 0.0, 0.0]))
    moe.update_bias(0.1)
    assert moe.bias.tolist() == pytest.approx([-0.1, -0.1, 0.1, 0.1])
    assert moe.pending_load.sum() == 0
    moe.eval()
    moe(torch.randn(10, 32))
    assert moe.pending_load.sum() == 0  # evaluation does not count towards balancing
    moe.train()
    moe(torch.randn(10, 32))
    assert moe.pending_load.sum() == 10 * 2
    state = moe.state_dict()
    assert "bias" in state and "load" not in state and "pending_load" not in state


def _imbalance_after_training(balance: str, steps: int = 60) -> float:
    """max / min expert load after training a skewed MoE on a regression task."""
    torch.manual_seed(0)
    config = OneRecConfig.preset(
        "tiny", SIZES, d_model=16, n_heads=2, n_experts=4, top_k=2, d_ff=32,
        moe_balance=balance, bias_update_rate=0.1,
    )  # fmt: skip
    moe = MoE(config)
    direction = torch.nn.functional.normalize(torch.randn(16), dim=0)
    with torch.no_grad():
        moe.router.weight.normal_(0.0, 0.1)
        moe.router.weight[:2] += direction  # inputs lean along `direction`: experts 0, 1 win
    x = torch.randn(512, 16) + 3.0 * direction
    y = x @ torch.randn(16, 16) * 0.3
    opt = torch.optim.Adam(moe.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = (moe(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if balance == "bias":
            moe.update_bias(config.bias_update_rate)
    moe.eval()
    with torch.no_grad():
        moe(x)
    return float(moe.load.max() / moe.load.min().clamp(min=1e-3))


def test_bias_balancing_reduces_load_imbalance():
    unbalanced = _imbalance_after_training("none")
    balanced = _imbalance_after_training("bias")
    assert unbalanced > 3.0, unbalanced  # the skewed router stays skewed on its own
    assert balanced < 2.0, balanced
    assert balanced < unbalanced


def test_model_records_moe_load_per_layer():
    torch.manual_seed(0)
    model = OneRec(moe_config())
    codes = torch.randint(4, (3, 2, 3))
    tokens = model.layout.encode_items(torch.randint(4, (3, 5, 3)))
    model.loss(tokens, torch.ones(3, 5, dtype=torch.bool), torch.arange(3), codes)
    load = model.moe_load()
    assert load.shape == (model.config.decoder_layers, 4)
    torch.testing.assert_close(load.sum(dim=1), torch.ones(model.config.decoder_layers))
    before = [m.bias.clone() for m in model.moe_layers()]
    model.update_moe_bias()
    assert any(not torch.equal(b, m.bias) for b, m in zip(before, model.moe_layers()))
