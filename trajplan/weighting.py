"""Weights for the action tokens' loss: lean the model's actions towards the data's better ones.

Not in the reference (docs/method.md, "Where trajplan deliberately differs"). The beam search
draws its candidate actions from the model, so on mixed-quality data it helps when those
candidates come from what the data's better actions did. Each step gets the weight
`exp(beta * z)` (clipped z, weights normalised to mean 1), with two baselines for z
(`data.weighting_baseline`):

    "mean"   z = (g_t - mean g) / std g: the return-to-go g_t = r_t + gamma V_t against the
             dataset's mean. It also rewards being in a good state, not only acting well,
             and it counts the end of every time-limited episode as poor (V is cut there).
    "state"  z = (g_t - V(s_t)) / std g: an advantage, as in advantage-weighted regression.
             V(s) is a small MLP fitted to g on the observations, so a step counts as good
             when it did better than the data usually does from that state. Dividing by the
             spread of g (not of the advantage) keeps the weights near 1 where the actions
             hardly matter, e.g. on one actor's data. Steps in the last 1/(1 - gamma) steps
             of an episode that ended without a termination get z = 0: their g is cut off
             by the time limit, not earned.

Observations, rewards and values are learned from all data unweighted either way.
On the CPU recipe "state" measured below "mean" on both Hopper datasets and within the noise
on HalfCheetah (README), so "mean" is the default and the recipe's choice.
"""

from __future__ import annotations

import numpy as np
import torch

from trajplan.episodes import Episodes

CLIP = 3.0  # |z| at most this


def step_weights(
    ep: Episodes, transitions: np.ndarray, beta: float, discount: float, baseline: str
) -> np.ndarray:
    """[n] float32 action-token weights with the named baseline (`data.weighting_baseline`)."""
    if baseline == "state":
        return advantage_weights(ep, transitions, beta, discount)
    return action_weights(transitions, beta, discount)


def returns_to_go(transitions: np.ndarray, discount: float) -> np.ndarray:
    """[n] float64 g_t = r_t + gamma * V_t from transition rows [obs, act, r, V]."""
    return transitions[:, -2].astype(np.float64) + discount * transitions[:, -1]


def action_weights(transitions: np.ndarray, beta: float, discount: float) -> np.ndarray:
    """[n] float32 weights exp(beta * z), mean 1, z against the dataset mean ("mean")."""
    g = returns_to_go(transitions, discount)
    if beta == 0.0 or g.std() == 0.0:
        return np.ones(len(g), dtype=np.float32)
    return _normalised(beta, (g - g.mean()) / g.std())


def advantage_weights(
    ep: Episodes, transitions: np.ndarray, beta: float, discount: float, seed: int = 0
) -> np.ndarray:
    """[n] float32 weights exp(beta * z), mean 1, z an advantage over a fitted V(s) ("state")."""
    g = returns_to_go(transitions, discount)
    if beta == 0.0 or g.std() == 0.0:
        return np.ones(len(g), dtype=np.float32)
    cut = truncated_tail(ep, horizon=round(1.0 / (1.0 - discount)) if discount < 1 else 0)
    baseline = fit_state_baseline(ep.observations, g, ~cut, seed=seed)
    return _normalised(beta, np.where(cut, 0.0, g - baseline) / g.std())


def truncated_tail(ep: Episodes, horizon: int) -> np.ndarray:
    """[n] bool: the step is among the last `horizon` steps of an episode that did not end in
    a termination (so its discounted return-to-go is cut short by the time limit)."""
    last = ep.starts + ep.lengths - 1
    cut_episode = ~np.asarray(ep.terminations, dtype=bool)[last]  # [E]
    steps_left = np.repeat(last, ep.lengths) - np.arange(ep.n_steps)  # [n]
    return np.repeat(cut_episode, ep.lengths) & (steps_left < horizon)


def fit_state_baseline(
    obs: np.ndarray, g: np.ndarray, fit: np.ndarray, steps: int = 3000, seed: int = 0
) -> np.ndarray:
    """V(s): a 2x256 MLP regressing g [n] on obs [n, o] over the rows where fit [n] is True;
    returns its prediction on every row, float64 [n].

    Deterministic for a seed: it runs on one thread (thread counts change float sums), on the
    CPU, with its own generator; 3,000 Adam steps of 512 rows take ~13 s for 200k steps.
    """
    if not fit.any():
        return np.full(len(g), g.mean())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(seed)
        x = torch.as_tensor(obs, dtype=torch.float32)  # [n, o]
        y = torch.as_tensor(g, dtype=torch.float32)  # [n]
        rows = torch.nonzero(torch.as_tensor(fit)).squeeze(1)
        x_mu, x_sd = x[rows].mean(0), x[rows].std(0, correction=0) + 1e-6
        y_mu, y_sd = y[rows].mean(), y[rows].std(correction=0) + 1e-6
        x, y = (x - x_mu) / x_sd, (y - y_mu) / y_sd
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], 256), torch.nn.ReLU(),
            torch.nn.Linear(256, 256), torch.nn.ReLU(),
            torch.nn.Linear(256, 1),
        )  # fmt: skip
        with torch.no_grad():  # initial weights from the generator too, not the global RNG
            for p in net.parameters():
                bound = 1.0 / max(p.shape[-1], 1) ** 0.5
                p.uniform_(-bound, bound, generator=gen)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(steps):
            b = rows[torch.randint(len(rows), (512,), generator=gen)]
            loss = (net(x[b]).squeeze(1) - y[b]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = torch.cat([net(chunk).squeeze(1) for chunk in x.split(65536)])
        return (pred * y_sd + y_mu).double().numpy()
    finally:
        torch.set_num_threads(threads)


def _normalised(beta: float, z: np.ndarray) -> np.ndarray:
    w = np.exp(beta * np.clip(z, -CLIP, CLIP))
    return (w / w.mean()).astype(np.float32)
