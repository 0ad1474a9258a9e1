"""A trained IQL run: its policy acts like a BC run's, and its critic scores states and actions.

    RUN/config.json               format trajplan-iql/1: env, dataset, reference scores, config
    RUN/policy.actor.safetensors  the actor's mean as an exported actor (trajplan.model.actor)
    RUN/critic.safetensors        q1, q2 (the Polyak-averaged target twin Q, which V and the
                                  actor learn from) and v, with the observation normalisation
                                  and the action box (format trajplan-critic/1)
    RUN/metrics.jsonl             {"kind": "iql", "step", "q_loss", "v_loss", ...} lines
    RUN/snapshots/step_K/         (--snapshot-every) runs of the weights after step K
    RUN/state.pt                  only while it trains: the resume state (`iql_state`)

`load_iql(run_dir)` gives an `IQLRun` (a `trajplan.runs.Run`); `IQLRun.critic(device)` the
`Critic`, a torch module on raw observations and actions:

    critic = load_iql("runs/iql").critic("cuda")
    critic.q(obs, act)   # [R, o], [R, a] float32/float64, any device -> [R] float32: min Q1, Q2
    critic.v(obs)        # [R, o] -> [R] float32
    critic.obs_dim, critic.act_dim

Observations as the run saw them (`trajplan.envs.registry.obs_view`: Ant's first 27 dims);
actions in the env's box (clipped to it). Values come back in the dataset's reward units:
the networks' outputs divided by `reward_scale` (the locomotion rule trains on rewards x 1000
/ return range), so they add up with TT's predicted rewards; a reward offset (AntMaze: -1
per step) stays in them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trajplan.errors import TrajplanError
from trajplan.runs.policy import PolicyRun, has_format, read_run
from trajplan.runtime import atomic_write, read_tagged_safetensors

IQL_FORMAT = "trajplan-iql/1"
CRITIC_FORMAT = "trajplan-critic/1"
CONFIG_FILE = "config.json"
CRITIC_FILE = "critic.safetensors"
METRICS_FILE = "metrics.jsonl"


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers of `sizes` with ReLU between them, orthogonal init (gain sqrt 2): the
    layout of a critic file's nets (and of IQL's, `trajplan.baselines.iql_nets`)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        linear = nn.Linear(sizes[i], sizes[i + 1])
        nn.init.orthogonal_(linear.weight, gain=math.sqrt(2.0))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Critic(nn.Module):
    """IQL's twin Q (min of the two) and V on raw observations and actions, batched."""

    def __init__(
        self,
        q1: nn.Sequential,
        q2: nn.Sequential,
        v: nn.Sequential,
        obs_mean: torch.Tensor,  # [o]
        obs_std: torch.Tensor,  # [o]
        action_low: torch.Tensor,  # [a]
        action_high: torch.Tensor,  # [a]
        reward_scale: float = 1.0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.q1, self.q2, self.v_net = q1, q2, v
        for name, t in (("obs_mean", obs_mean), ("obs_std", obs_std)):
            self.register_buffer(name, torch.as_tensor(t, dtype=torch.float32))
        for name, t in (("action_low", action_low), ("action_high", action_high)):
            self.register_buffer(name, torch.as_tensor(t, dtype=torch.float32))
        self.obs_dim, self.act_dim = int(self.obs_mean.shape[0]), int(self.action_low.shape[0])
        self.reward_scale = float(reward_scale)
        self.meta = dict(meta or {})
        self.requires_grad_(False).eval()

    def _obs(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise TrajplanError(f"critic expects observations [R, {self.obs_dim}], got {obs.shape}")
        x = obs.to(self.obs_mean.device, torch.float32)
        return (x - self.obs_mean) / self.obs_std  # [R, o]

    def _act(self, act: torch.Tensor) -> torch.Tensor:
        if act.ndim != 2 or act.shape[1] != self.act_dim:
            raise TrajplanError(f"critic expects actions [R, {self.act_dim}], got {act.shape}")
        a = act.to(self.action_low.device, torch.float32)
        a = torch.minimum(torch.maximum(a, self.action_low), self.action_high)
        return 2.0 * (a - self.action_low) / (self.action_high - self.action_low) - 1.0

    def q(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """min(Q1, Q2): obs [R, o], act [R, a] -> [R] float32 on the critic's device."""
        x = torch.cat([self._obs(obs), self._act(act)], dim=-1)  # [R, o + a]
        q = torch.minimum(self.q1(x), self.q2(x)).squeeze(-1)
        return q / self.reward_scale

    def v(self, obs: torch.Tensor) -> torch.Tensor:
        """V: obs [R, o] -> [R] float32 on the critic's device."""
        return self.v_net(self._obs(obs)).squeeze(-1) / self.reward_scale

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.q(obs, act)


def save_critic(critic: Critic, path: str | Path) -> Path:
    """Write a critic as one safetensors file (temporary name, then renamed)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in critic.state_dict().items()}
    hidden = [int(m.out_features) for m in critic.v_net if isinstance(m, nn.Linear)][:-1]
    meta = {**critic.meta, "hidden": hidden, "reward_scale": critic.reward_scale}
    header = {"format": CRITIC_FORMAT, "meta": json.dumps(meta, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def load_critic(path: str | Path, device: str | torch.device = "cpu") -> Critic:
    """Read a critic file onto `device`; a missing or damaged file is a TrajplanError."""
    meta, tensors = read_tagged_safetensors(path, CRITIC_FORMAT, "critic", framework="pt")
    try:
        o, a = tensors["obs_mean"].shape[0], tensors["action_low"].shape[0]
        hidden = [int(h) for h in meta["hidden"]]
        nets = [mlp([o + a, *hidden, 1]), mlp([o + a, *hidden, 1]), mlp([o, *hidden, 1])]
        critic = Critic(*nets, tensors["obs_mean"], tensors["obs_std"], tensors["action_low"],
                        tensors["action_high"], float(meta["reward_scale"]), meta)  # fmt: skip
        critic.load_state_dict(tensors)
    except (KeyError, RuntimeError) as exc:
        raise TrajplanError(f"{path} is a damaged trajplan critic ({exc})") from None
    return critic.to(device)


class IQLRun(PolicyRun):
    """A loaded IQL run directory: a `trajplan.runs.Run` whose policy acts (no search), with
    a critic (`critic`)."""

    kind = "iql"

    def critic(self, device: str | torch.device = "cpu") -> Critic:
        """The run's critic on `device` (read from RUN/critic.safetensors on each call)."""
        return load_critic(self.run_dir / CRITIC_FILE, device)


def is_iql_run(path: str | Path) -> bool:
    """True when path is a run directory written by `trajplan.baselines.iql.train_iql`."""
    return has_format(path, IQL_FORMAT)


def load_iql(run_dir: str | Path) -> IQLRun:
    """Read an IQL run directory; a missing or damaged file is a one-line TrajplanError."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists() and (run_dir / "state.pt").is_file():
        raise TrajplanError(
            f"{run_dir} is an unfinished IQL run (no config.json yet): finish it with "
            f"trajplan iql --out {run_dir} --resume"
        )
    return read_run(IQLRun, run_dir, IQL_FORMAT)
