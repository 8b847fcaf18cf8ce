"""Full-softmax cross-entropy over a large output table, with the gradient written by hand.

Both softmax heads over a whole catalog use it: SASRec-CE's (``onerec.baselines.sasrec``) and
OneRec's item head (``OneRec.sequence_loss``). Catalogs of 10k-20k items make the ``(n,
num_items)`` logits the largest tensor of a training step on CPU, so it pays to hold them once.
"""

from __future__ import annotations

import torch


class _FullSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy of ``h @ W.T`` (plus ``values`` added at ``cols``, row by row)
    against ``targets``.

    Same value and gradient as ``F.cross_entropy(h @ W.T, targets)``, but the ``(n, num_items)``
    logits become probabilities in place and are reused as their own gradient: one buffer
    instead of three, and no separate log-softmax backward pass (which alone took 15% of a
    full-softmax SASRec training step on CPU). The softmax runs in float32 whatever the
    autocast dtype of the product.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                cols: torch.Tensor | None, values: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        probs = (h @ weight.T).float()  # (n, num_items)
        if cols is not None and values is not None:
            probs.scatter_add_(1, cols, values.float())
        rows = torch.arange(len(targets), device=h.device)
        target_logit = probs[rows, targets].clone()
        top = probs.max(dim=1, keepdim=True).values
        probs.sub_(top).exp_()
        total = probs.sum(dim=1, keepdim=True)
        loss = (total.log().squeeze(1) + top.squeeze(1) - target_logit).mean()
        probs.div_(total)
        ctx.save_for_backward(h, weight, targets, cols, values)
        ctx.probs = probs  # becomes the gradient in place: one backward pass only
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        h, weight, targets, cols, values = ctx.saved_tensors
        probs, ctx.probs = ctx.probs, None
        if probs is None:
            raise RuntimeError("the full-softmax loss supports one backward pass per forward")
        rows = torch.arange(len(targets), device=h.device)
        probs[rows, targets] -= 1.0  # d loss / d logits = softmax - one-hot (probs is ours)
        probs.mul_(grad / len(targets))
        grad_h = (probs @ weight.float()).to(h.dtype)
        grad_w = (probs.T @ h.float()).to(weight.dtype)
        grad_values = None
        if cols is not None and values is not None:  # a value's gradient is its logit's
            grad_values = probs.gather(1, cols).to(values.dtype)
        return grad_h, grad_w, None, None, grad_values


def full_softmax_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    extra: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of the logits ``h @ weight.T`` (``h`` (n, d), ``weight`` (N, d))
    against ``targets`` (n,) in ``[0, N)``; 0 for no rows. ``extra = (cols, values)``, both
    (n, k): sparse additions to the logits, ``values[i, j]`` added to column ``cols[i, j]`` of
    row i (repeated columns add up), with their gradient."""
    cols, values = extra if extra is not None else (None, None)
    if len(targets) == 0:
        zero = h.sum() * 0 + weight.sum() * 0  # keeps every input in the graph
        return (zero + (values.sum() * 0 if values is not None else 0)).float()
    return _FullSoftmaxCE.apply(h, weight, targets, cols, values)
