"""One readable training loop, used for pretraining (all tokens) and SFT (completion tokens only)."""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..utils.device import autocast_context
from ..utils.hf import dense_attention_mask


def pack(
    examples: list[tuple[list[int], list[int]]],
    max_len: int,
    pad_id: int,
    visible: list[list[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Concatenate (ids, loss_mask) examples into blocks of `max_len` tokens; an example never straddles two
    blocks (it starts a new block instead), so every block begins at a document start. `visible` (optional, per
    example and token): the last position of the example allowed to attend to that token; returned as the last
    position of the block (max_len − 1 for tokens visible to the end — a value ≥ the example's length — and for
    padding), else None."""
    blocks: list[tuple[list[int], list[int], list[int]]] = []
    cur: tuple[list[int], list[int], list[int]] = ([], [], [])
    for i, (ids, mask) in enumerate(examples):
        ids, mask = ids[:max_len], mask[:max_len]
        if len(cur[0]) + len(ids) > max_len:
            blocks.append(cur)
            cur = ([], [], [])
        offset = len(cur[0])
        until = visible[i][: len(ids)] if visible is not None else [len(ids)] * len(ids)
        cur[0].extend(ids)
        cur[1].extend(mask)
        cur[2].extend(offset + u if u < len(ids) else max_len - 1 for u in until)
    if cur[0]:
        blocks.append(cur)
    if not blocks:
        empty = torch.full((0, max_len), pad_id, dtype=torch.long)
        return empty, torch.zeros((0, max_len), dtype=torch.bool), (empty.clone() if visible is not None else None)
    pad = [max_len - len(b[0]) for b in blocks]
    ids_t = torch.tensor([b[0] + [pad_id] * p for b, p in zip(blocks, pad)], dtype=torch.long)
    mask_t = torch.tensor([b[1] + [0] * p for b, p in zip(blocks, pad)], dtype=torch.bool)
    if visible is None:
        return ids_t, mask_t, None  # (N, T) each
    vis_t = torch.tensor([b[2] + [max_len - 1] * p for b, p in zip(blocks, pad)], dtype=torch.long)
    return ids_t, mask_t, vis_t  # (N, T) each


def clause_attention(visible: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) boolean mask from per-key last visible positions (B, T): causal, and key k hidden from every
    query after visible[b, k]."""
    pos = torch.arange(visible.shape[1], device=visible.device)
    causal = pos[None, :] <= pos[:, None]  # (Tq, Tk)
    return (causal[None] & (pos[None, :, None] <= visible[:, None, :]))[:, None]


def train(
    model,
    ids: torch.Tensor,
    loss_mask: torch.Tensor,
    epochs: float,
    batch_size: int,
    lr: float,
    warmup_steps: int,
    seed: int,
    device: str,
    desc: str,
    on_step=None,
    every: int = 0,
    autocast: torch.dtype | None = None,
    progress: bool = True,
    weight_decay: float = 0.1,
    visible: torch.Tensor | None = None,
) -> list[float]:
    """AdamW with linear warm-up and cosine decay; returns the loss of every step.

    `autocast` (e.g. torch.bfloat16) wraps the forward pass only; the log-softmax and the loss are fp32. On a GPU
    the data sit on the device and the loss is read back every 20 steps, so the host never waits per step.
    `visible` (N, T), from `pack`: train under `clause_attention` instead of the plain causal mask."""
    model.to(device).train()
    ids, loss_mask = ids.to(device), loss_mask.to(device)
    visible = visible.to(device) if visible is not None else None
    n = ids.shape[0]
    steps = max(1, int(math.ceil(epochs * n / batch_size)))
    order: list[int] = []
    rng = random.Random(seed)
    while len(order) < steps * batch_size:
        perm = list(range(n))
        rng.shuffle(perm)
        order += perm
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for name, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
        **({"fused": True} if device.startswith("cuda") else {}),
    )

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    losses: list[torch.Tensor] = []
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=1.0, disable=not progress)
    for step in bar:
        idx = torch.tensor(order[step * batch_size : (step + 1) * batch_size], device=ids.device)
        x = ids[idx]  # (B, T)
        m = loss_mask[idx]  # (B, T)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        extra = {}
        if visible is not None:
            extra["attention_mask"] = dense_attention_mask(model, clause_attention(visible[idx]))
        with autocast_context(device, autocast):
            logits = model(input_ids=x, **extra).logits  # (B, T, V)
        # predict token t+1 from position t; the loss covers targets whose mask is on
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)  # (B, T-1)
        tmask = m[:, 1:].float()
        loss = (nll * tmask).sum() / tmask.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.detach())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{float(losses[-1]):.3f}")
        if on_step is not None and every and (step + 1) % every == 0:
            model.eval()
            on_step(step + 1)
            model.train()
    model.eval()
    return torch.stack(losses).tolist()
