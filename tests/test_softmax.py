"""The hand-written full-softmax cross-entropy shared by SASRec-CE and OneRec's item head."""

import pytest
import torch
import torch.nn.functional as F

from onerec.model.softmax import full_softmax_cross_entropy


def _data(dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(7, 5, dtype=dtype, generator=g, requires_grad=True)
    w = torch.randn(11, 5, dtype=dtype, generator=g, requires_grad=True)
    return h, w, torch.randint(0, 11, (7,), generator=g)


def test_value_and_gradients_match_cross_entropy():
    h, w, t = _data()
    ours = full_softmax_cross_entropy(h, w, t)
    ours.backward()
    grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = F.cross_entropy(h @ w.T, t)
    ref.backward()
    assert float(ours.detach()) == pytest.approx(float(ref.detach()))
    assert torch.allclose(grads[0], h.grad) and torch.allclose(grads[1], w.grad)


def test_under_bf16_autocast_the_softmax_is_float32_and_gradients_keep_input_dtypes():
    """The GPU path trains under bf16 autocast: the product may be bf16, the loss is not, and
    each gradient comes back in its input's dtype."""
    h, w, t = _data(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = full_softmax_cross_entropy(h, w, t)
    assert ours.dtype == torch.float32
    ours.backward()
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    ref_h, ref_w = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    F.cross_entropy(ref_h @ ref_w.T, t).backward()
    with torch.no_grad():
        assert float(ours) == pytest.approx(float(F.cross_entropy(h @ w.T, t)), abs=0.05)
    assert torch.allclose(h.grad, ref_h.grad, atol=0.05)


def test_no_rows_is_a_zero_loss_that_still_backpropagates():
    h, w, _ = _data()
    loss = full_softmax_cross_entropy(h[:0], w, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.count_nonzero(w.grad) == 0


def test_one_backward_pass_per_forward():
    h, w, t = _data()
    loss = full_softmax_cross_entropy(h, w, t)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


def test_sparse_extra_logits_add_up_and_get_their_gradient():
    """``extra = (cols, values)`` adds values to single logits (a repeated column adds twice),
    with the same value and gradients as the dense cross-entropy of the summed logits."""
    h, w, t = _data()
    g = torch.Generator().manual_seed(1)
    cols = torch.randint(0, 11, (7, 4), generator=g)
    cols[0, 1] = cols[0, 0]  # one column twice in a row
    values = torch.randn(7, 4, dtype=h.dtype, generator=g, requires_grad=True)
    ours = full_softmax_cross_entropy(h, w, t, (cols, values))
    ours.backward()
    grads = h.grad.clone(), w.grad.clone(), values.grad.clone()
    h.grad = w.grad = values.grad = None
    ref = F.cross_entropy((h @ w.T).scatter_add(1, cols, values), t)
    ref.backward()
    assert float(ours.detach()) == pytest.approx(float(ref.detach()))
    assert float(ours.detach()) != pytest.approx(float(F.cross_entropy(h @ w.T, t).detach()))
    for mine, theirs in zip(grads, (h.grad, w.grad, values.grad)):
        assert torch.allclose(mine, theirs)
    empty = full_softmax_cross_entropy(h[:0], w, t[:0], (cols[:0], values[:0]))
    empty.backward()
    assert float(empty.detach()) == 0.0
