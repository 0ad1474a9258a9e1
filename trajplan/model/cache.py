"""Key/value caches of the TT model and attention over an episode's shared prefix.

Below both the network (`trajplan.model.gpt`, whose attention writes into a cache) and the
planner's decoding paths (`trajplan.model.decoding`), so neither imports the other's loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    """Keys and values of every layer for a batch of sequences that share one length.

    k, v: [n_layer, B, H, capacity, head_dim]; positions 0..length-1 are filled. The
    sequences start at position 0 of the window (an observation's first token).
    """

    k: torch.Tensor
    v: torch.Tensor
    length: int = 0

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]


def shared_prefix_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    prefix: KVCache,
    layer: int,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Attention over [an episode's shared prefix, the row's own keys] (inference only).

    q [R, H, T, hd]; own keys/values k, v [R, H, S, hd]; prefix (batch E, R = E * r rows,
    episode-major) holds keys at window positions 0..Lp-1; mask [T, Lp + S] (True = attend).
    The prefix is read once per episode (a [r*T, Lp] matmul per head), never copied per row.
    """
    R, H, T, hd = q.shape
    E, Lp = prefix.batch_size, prefix.length
    r = R // E
    kp = prefix.k[layer, :, :, :Lp]  # [E, H, Lp, hd]
    vp = prefix.v[layer, :, :, :Lp]
    q = q * hd**-0.5
    qe = q.view(E, r, H, T, hd).transpose(1, 2).reshape(E, H, r * T, hd)
    att_p = torch.matmul(qe, kp.transpose(-1, -2))  # [E, H, r*T, Lp]
    att_p = att_p.view(E, H, r, T, Lp).transpose(1, 2).reshape(R, H, T, Lp)
    att = torch.cat([att_p, torch.matmul(q, k.transpose(-1, -2))], dim=-1)  # [R, H, T, Lp+S]
    att = att.masked_fill_(~mask, float("-inf")).softmax(dim=-1)
    w_p, w_own = att.split([Lp, k.shape[2]], dim=-1)
    w_p = w_p.reshape(E, r, H, T, Lp).transpose(1, 2).reshape(E, H, r * T, Lp)
    y_p = torch.matmul(w_p, vp).view(E, H, r, T, hd).transpose(1, 2).reshape(R, H, T, hd)
    return y_p + torch.matmul(w_own, v)  # [R, H, T, hd]
