"""The Trajectory Transformer GPT (docs/method.md, Model): the network and its training loss.

Its key/value-cached inference paths for planning are in `trajplan.model.decoding`.

A sequence is a run of whole transitions `[obs (o), act (a), reward, value]`, D = o + a + 2
tokens each, always starting at an observation's first token. Token t holds dimension
`t % D`; its raw bin index (0..N-1, or N for the stop token) is offset by `d * N` into one
embedding table, and the stop token maps to the table's last row.

Attention is causal and, in addition, no query attends to a value token (positions
D-1, 2D-1, ...). The output head is one `(n_embd -> N+1)` map per dimension slot: head d
applies at positions whose *input* token is dimension d, so it predicts dimension d+1.

State dict names (stable, they are the checkpoint format):
    tok_emb.weight            [N*D + 1, C]
    pos_emb                   [block_size, C]
    blocks.{i}.ln1.{weight,bias}, blocks.{i}.attn.qkv.{weight,bias} [3C, C],
    blocks.{i}.attn.proj.{weight,bias}, blocks.{i}.ln2.{weight,bias},
    blocks.{i}.mlp.fc.{weight,bias} [4C, C], blocks.{i}.mlp.proj.{weight,bias} [C, 4C]
    ln_f.{weight,bias}
    head.weight               [D, N+1, C]
    goal_emb.weight           [g*N, C]   (goal-conditioned models only, model.goal_dim = g)

Goal conditioning (model.goal_dim = g > 0; docs/method.md, Goal-conditioned planning): the
goal's g tokens (bins of the goal dims) are embedded with a table of their own, summed into
one vector with no position embedding, and placed before the sequence: one extra position
0, so window position p is model position p + 1 (`goal_offset`). The mask is the usual one
shifted by one, plus a column that lets every position attend to the goal; the goal
position attends to itself only (its keys and values depend on the goal alone) and its
output is dropped. A model without a goal (g = 0) is exactly the model above.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from trajplan.config import ModelConfig, check_model_config
from trajplan.model.cache import KVCache, shared_prefix_attention
from trajplan.model.kernels import Dropout, blocked_attention, causal_bias


def attention_mask(block_size: int, transition_dim: int) -> torch.Tensor:
    """[T, T] bool, True where query i may attend key j: j <= i and j is not a value token."""
    pos = torch.arange(block_size)
    causal = pos[None, :] <= pos[:, None]
    not_value = (pos % transition_dim) != transition_dim - 1
    return causal & not_value[None, :]


def goal_attention_mask(block_size: int, transition_dim: int) -> torch.Tensor:
    """[T+1, T+1] bool: attention_mask behind a goal position 0 that every position sees."""
    out = torch.zeros(block_size + 1, block_size + 1, dtype=torch.bool)
    out[:, 0] = True
    out[1:, 1:] = attention_mask(block_size, transition_dim)
    return out


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.attn_drop = cfg.dropout
        self.resid_drop = Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        prefix: KVCache | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        H = self.n_head
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, H, C // H).transpose(1, 2)  # [B, H, T, hd]
        k = k.view(B, T, H, C // H).transpose(1, 2)
        v = v.view(B, T, H, C // H).transpose(1, 2)
        if cache is not None:  # write the new keys/values, attend over the whole prefix
            start = cache.length
            cache.k[layer, :, :, start : start + T] = k
            cache.v[layer, :, :, start : start + T] = v
            k = cache.k[layer, :, :, : start + T]  # [B, H, start+T, hd]
            v = cache.v[layer, :, :, : start + T]
        if prefix is not None and prefix.length > 0:
            y = shared_prefix_attention(q, k, v, prefix, layer, mask)
        elif self.training and self.attn_drop > 0 and cache is None and x.device.type == "cpu":
            # SDPA with dropout has no fused CPU kernel: see trajplan.model.kernels
            hd = C // H
            bias = causal_bias(mask, q.dtype)  # [T, T]
            y = blocked_attention(
                q.reshape(B * H, T, hd),
                k.reshape(B * H, T, hd),
                v.reshape(B * H, T, hd),
                bias,
                self.attn_drop,
            ).view(B, H, T, hd)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0
            )  # [B, H, T, hd]
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))  # exact (erf) GELU


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache | None,
        layer: int,
        prefix: KVCache | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask, cache, layer, prefix)
        return x + self.mlp(self.ln2(x))


class TrajectoryGPT(nn.Module):
    """The TT model: token sequences of whole transitions -> next-token logits over N+1."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if min(cfg.obs_dim, cfg.act_dim, cfg.vocab_size, cfg.block_size) <= 0:
            raise ValueError("ModelConfig needs obs_dim, act_dim, vocab_size and block_size > 0")
        check_model_config(cfg)
        self.cfg = cfg
        D, N, C = cfg.transition_dim, cfg.vocab_size, cfg.n_embd
        self.transition_dim = D
        self.vocab_size = N
        self.block_size = cfg.block_size
        self.stop_token = N * D  # embedding row of the stop token
        self.tok_emb = nn.Embedding(N * D + 1, C)
        self.pos_emb = nn.Parameter(torch.zeros(cfg.block_size, C))
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(C)
        self.head = nn.Parameter(torch.empty(D, N + 1, C))  # one bias-free map per dimension
        self.goal_dim = cfg.goal_dim
        self.goal_offset = 1 if cfg.goal_dim else 0  # model position of window position 0
        if cfg.goal_dim:
            self.goal_emb = nn.Embedding(cfg.goal_dim * N, C)
            mask = goal_attention_mask(cfg.block_size, D)
        else:
            mask = attention_mask(cfg.block_size, D)
        self.register_buffer("mask", mask, persistent=False)  # [T(+1), T(+1)]
        weights = torch.ones(D)  # loss weight per *target* dimension
        weights[cfg.obs_dim : cfg.obs_dim + cfg.act_dim] = cfg.action_weight
        weights[-2] = cfg.reward_weight
        weights[-1] = cfg.value_weight
        self.register_buffer("dim_weights", weights, persistent=False)
        kinds = torch.zeros(D, dtype=torch.long)  # 0 obs, 1 action, 2 reward, 3 value
        kinds[cfg.obs_dim : cfg.obs_dim + cfg.act_dim] = 1
        kinds[-2], kinds[-1] = 2, 3
        self.register_buffer("target_kind", kinds, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference init: N(0, 0.02) for Linear/Embedding, zero biases and pos_emb."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.pos_emb)
        for d in range(self.transition_dim):  # PyTorch's default Linear init, per head
            nn.init.kaiming_uniform_(self.head.data[d], a=math.sqrt(5))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        """Raw tokens [B, T] at window positions start..start+T-1 -> embeddings [B, T, C]."""
        T = idx.shape[1]
        pos = torch.arange(start, start + T, device=idx.device)
        offset_idx = idx + (pos % self.transition_dim) * self.vocab_size
        offset_idx = torch.where(idx == self.vocab_size, self.stop_token, offset_idx)
        return self.drop(self.tok_emb(offset_idx) + self.pos_emb[start : start + T])

    def _embed_goal(self, goal: torch.Tensor) -> torch.Tensor:
        """Goal tokens [B, g] (bins 0..N-1 of the goal dims) -> the goal position [B, 1, C]."""
        if self.goal_dim == 0:
            raise ValueError("this model has no goal (trained without data.goal_dims)")
        if goal.dim() != 2 or goal.shape[1] != self.goal_dim:
            raise ValueError(
                f"goal of shape {tuple(goal.shape)}: this model takes [batch, {self.goal_dim}]"
            )
        g = goal.clamp(0, self.vocab_size - 1)  # the stop token cannot be a goal bin
        rows = g + torch.arange(self.goal_dim, device=g.device) * self.vocab_size
        return self.drop(self.goal_emb(rows).sum(1, keepdim=True))

    def check_goal(self, goal: torch.Tensor | None, batch: int) -> None:
        """A goal-conditioned model needs goal [batch, g]; a model without a goal, none."""
        if self.goal_dim and goal is None:
            raise ValueError(f"this model is goal-conditioned: pass goal [batch, {self.goal_dim}]")
        if goal is not None and goal.shape[0] != batch:
            raise ValueError(f"goal batch {goal.shape[0]} != sequence batch {batch}")

    def _head(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Hidden states [B, T, C] at positions start.. -> logits [B, T, N+1]."""
        T = x.shape[1]
        if T == 1:  # one position (incremental decoding): a single head
            return F.linear(x, self.head[start % self.transition_dim])
        dims = torch.arange(start, start + T, device=x.device) % self.transition_dim
        if start == 0 and T % self.transition_dim == 0:  # whole transitions: one einsum
            D = self.transition_dim
            xt = x.view(x.shape[0], T // D, D, x.shape[2])  # [B, T/D, D, C]
            return torch.einsum("btdc,dvc->btdv", xt, self.head).reshape(x.shape[0], T, -1)
        return torch.einsum("btc,tvc->btv", x, self.head[dims])

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        goal: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Full forward over a window that starts at an observation's first token.

        idx [B, T] raw bins (N = stop) -> logits [B, T, N+1]; with targets [B, T] and
        loss_mask [B, T], also the weighted, masked mean cross-entropy. goal [B, g]: the goal
        tokens of a goal-conditioned model (placed before the sequence).
        """
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than the block ({self.block_size})")
        self.check_goal(goal, B)
        x = self._embed(idx, 0)
        if goal is not None:
            x = torch.cat([self._embed_goal(goal), x], dim=1)  # [B, 1+T, C]
        n = T + self.goal_offset
        mask = self.mask[:n, :n]
        for i, block in enumerate(self.blocks):
            x = block(x, mask, None, i)
        x = self.ln_f(x[:, self.goal_offset :])
        if T % self.transition_dim:  # pad to whole transitions for the batched head
            pad = self.transition_dim - T % self.transition_dim
            x = F.pad(x, (0, 0, 0, pad))
        logits = self._head(x, 0)[:, :T]  # [B, T, N+1]
        if targets is None:
            return logits, None
        return logits, self.loss(logits, targets, loss_mask)

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Cross-entropy weighted by the target's dimension, masked, averaged over all tokens."""
        B, T, V = logits.shape
        ce = F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1), reduction="none")
        target_dims = (torch.arange(T, device=logits.device) + 1) % self.transition_dim
        ce = ce.view(B, T) * self.dim_weights[target_dims]
        if loss_mask is not None:
            ce = ce * loss_mask
        return ce.mean()

    @torch.no_grad()
    def loss_by_kind(
        self, logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """[4] mean unweighted cross-entropy of observation, action, reward and value targets
        (tokens with loss_mask > 0; diagnostics, not the training loss)."""
        B, T, V = logits.shape
        ce = F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1), reduction="none")
        kind = self.target_kind[(torch.arange(T, device=logits.device) + 1) % self.transition_dim]
        keep = torch.ones(B, T, device=logits.device) if loss_mask is None else (loss_mask > 0)
        onehot = F.one_hot(kind, 4).to(ce.dtype)  # [T, 4]
        sums = (ce.view(B, T) * keep).sum(0) @ onehot  # [4]
        counts = keep.to(ce.dtype).sum(0) @ onehot
        return sums / counts.clamp(min=1)
