"""Guards before work: the memory and disk a command will need, from the sizes it was asked
for, against what this machine has; a request that cannot fit is one TrajplanError naming
the option to lower, before anything is loaded, played or written.

    available_memory   free bytes of a device: MemAvailable (CPU) or cudaMemGetInfo (GPU)
    plan_bytes         planning E episodes at once: KV caches, logits, windows, envs
    bc_bytes           fitting a BC MLP: weights, gradients, Adam moments, a batch
    iql_bytes          IQL's five MLPs with Adam, a batch through them; iql_state_bytes its state.pt
    ensemble_bytes     a stacked ensemble with Adam, its bootstrap indices and a batch
    predict_bytes      S x K rollouts of a TT model: windows, caches, the rollouts, their scores
    check_out_dir      an output folder that can be made and written, proved creating nothing
    check_memory       refuse when an estimate exceeds what is available
    check_disk         refuse when files will not fit: free space and `ulimit -f`
    max_threads        the most CPU threads a command may ask for

The estimates are upper-side approximations (calibrated on CPU against peak RSS, see
tests/test_guards.py): they refuse what would surely fail, not what is merely tight.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trajplan.errors import TrajplanError

if TYPE_CHECKING:
    import torch

    from trajplan.config import ModelConfig, PlanConfig

GIB = 2.0**30
ENV_BYTES = 2 * 2**20  # one MuJoCo env of an episode (model, data, wrappers): ~1-2 MiB
MEMORY_SHARE = 0.9  # of the available memory an estimate may take


def size_text(n: float) -> str:
    """Bytes as '512 KiB', '3.2 MiB', '12.0 GiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} bytes"


def available_memory(dev: torch.device | str = "cpu") -> int | None:
    """Free memory of the device (GPU) or available RAM (Linux); None when unknown."""
    kind = dev if isinstance(dev, str) else dev.type
    if kind.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(dev))[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(need: float, dev: torch.device | str, what: str, lower: str) -> None:
    """Refuse `what` (e.g. 'planning 10 episodes x 128 beams') when it needs more than
    MEMORY_SHARE of the device's available memory; `lower` names the option(s) to lower."""
    have = available_memory(dev)
    if have is None or need <= MEMORY_SHARE * have:
        return
    raise TrajplanError(
        f"{what} needs about {size_text(need)} of memory, {size_text(have)} are available "
        f"on {dev}: lower {lower}"
    )


def plan_bytes(model: ModelConfig, plan: PlanConfig, episodes: int) -> int:
    """Peak memory of planning `episodes` episodes in one batch with `plan` (float32).

    Per row (R = episodes x n_expand x beam_width rows while sampling actions): the
    key/value caches of every layer over the window, the logits and what sampling keeps of
    them (softmax, sorted copies and indices), the activations and attention scores of a
    window recomputed when it slides, and the planned tokens; per episode, its env."""
    c, d, v = model.n_embd, model.transition_dim, model.vocab_size + 1
    w = min(model.block_size, plan.max_context_transitions * d - 1)  # planner.plan_window
    if plan.window == "grow":
        w = model.block_size
    rows = episodes * plan.n_expand * plan.beam_width
    per_row = 4 * (2 * model.n_layer * w * c + 12 * v + w * (c + model.n_head * w // 2))
    per_row += 8 * plan.horizon * (d + 2)  # planned tokens (int64), rewards (float64)
    return rows * per_row + episodes * ENV_BYTES


def check_planning(
    model: ModelConfig | None,
    plan: PlanConfig | None,
    episodes: int,
    device: str = "cpu",
    workers: int = 1,
) -> None:
    """Refuse planning (or, plan None, acting: a policy run) `episodes` episodes at once that
    cannot fit on `device`, naming the largest of the sizes asked as the option to lower.
    Worker processes share the CPU's memory; on GPUs they split the episodes."""
    if device == "auto" or device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            device = "cpu"
        elif device == "auto":
            device = "cuda"
    if device.startswith("cuda") and workers > 1:
        import torch

        episodes = -(-episodes // min(workers, torch.cuda.device_count()))
    if model is None or plan is None:
        need, what, lower = episodes * ENV_BYTES, f"playing {episodes:,} episodes", "--episodes"
    else:
        need = plan_bytes(model, plan, episodes)
        sizes = {"--episodes": episodes, "--beam-width": plan.beam_width}
        sizes["--n-expand"] = plan.n_expand
        lower = max(sizes, key=lambda k: sizes[k])
        what = (
            f"planning {episodes:,} episodes x {plan.beam_width:,} beams x {plan.n_expand} "
            "expansions at once"
        )
    check_memory(need, device, what, lower)


def check_eval_room(
    folders: Sequence[Path],
    models: Sequence[ModelConfig | None],
    plans: Sequence[PlanConfig | None],
    episodes: int,
    episode_steps: int | None,
    device: str = "cpu",
    workers: int = 1,
) -> None:
    """Before an evaluation plays: memory for each run's episodes (`check_planning`) and
    disk for its eval.json in its folder (full-length episodes: 1000 steps)."""
    for folder, model, plan in zip(folders, models, plans, strict=True):
        check_planning(model, plan, episodes, device, workers)
        size = eval_bytes(episodes, episode_steps or 1000)
        largest = max(size - 2**19, 2**19)  # eval.json or eval.png
        check_disk(folder, size, largest, f"the evaluation of {episodes:,} episodes")


def bc_bytes(sizes: Sequence[int], batch: int, n_samples: int = 0) -> int:
    """Peak memory of fitting a BC MLP of layer sizes [obs, *hidden, act] with Adam: weights,
    gradients and two moments (float32), a batch's activations and their gradients, and the
    training set itself (n_samples rows of obs + act + weight)."""
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
    acts = batch * sum(sizes)
    return 4 * (4 * params + 3 * acts + n_samples * (sizes[0] + sizes[-1] + 1))


def mlp_params(sizes: Sequence[int]) -> int:
    """Weights and biases of an MLP of layer sizes `sizes`."""
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def iql_bytes(obs_dim: int, act_dim: int, hidden: Sequence[int], batch: int) -> int:
    """Peak memory of IQL's updates (float32): twin Q and their targets, V and the actor
    with gradients and two Adam moments, and a batch of transitions (obs, act, reward, mask,
    next obs) through the six MLPs forward and backward."""
    q = mlp_params([obs_dim + act_dim, *hidden, 1])
    v, actor = mlp_params([obs_dim, *hidden, 1]), mlp_params([obs_dim, *hidden, act_dim])
    weights = 2 * q * 5 + (v + actor) * 4  # q: weights, target, grad, 2 moments
    acts = batch * (6 * sum(hidden) + 2 * obs_dim + act_dim + 3)
    return 4 * (weights + 3 * acts) + 8 * batch  # the batch's int64 indices


def iql_state_bytes(obs_dim: int, act_dim: int, hidden: Sequence[int]) -> int:
    """state.pt of an IQL run (weights, targets and Adam moments), plus the run's files."""
    q = mlp_params([obs_dim + act_dim, *hidden, 1])
    v, actor = mlp_params([obs_dim, *hidden, 1]), mlp_params([obs_dim, *hidden, act_dim])
    return 4 * (2 * q * 4 + (v + actor) * 3) + 2**20


def ensemble_bytes(members: int, sizes: Sequence[int], batch: int, n_rows: int) -> int:
    """Peak memory of fitting a stacked ensemble of `members` MLPs of layer sizes `sizes`
    with Adam (float32): weights, gradients, moments, each member's bootstrap indices over
    `n_rows` rows (int64) and a batch's indices, inputs, activations and gradients."""
    params = members * mlp_params(sizes)
    acts = members * batch * sum(sizes)
    return 4 * (4 * params + 3 * acts) + 8 * members * (n_rows + 2 * batch)


def predict_bytes(model: ModelConfig, rows: int, horizon: int) -> int:
    """Peak memory of rolling out `rows` (starts x samples) rows of a TT model `horizon`
    steps: each row's key/value caches and window activations (as in plan_bytes), logits,
    and the rollouts with their actions and scoring copies (float64)."""
    c, v, w = model.n_embd, model.vocab_size + 1, model.block_size
    per_row = 4 * (2 * model.n_layer * w * c + 12 * v + w * (c + model.n_head * w // 2))
    per_row += 8 * horizon * (4 * model.obs_dim + model.act_dim + 2)
    return rows * per_row


def check_out_dir(out: str | Path, what: str = "--out folder") -> None:
    """Refuse, before any work, an output folder that cannot be made or written: a file
    where the folder should be, a path below a file, a folder no file can be written into.
    Proved by a temporary file in the nearest existing folder; nothing is left behind."""
    import tempfile

    d = Path(out)
    if d.exists() and not d.is_dir():
        raise TrajplanError(f"{what} {out} is a file, not a folder: choose another")
    probe = d.absolute()
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise TrajplanError(f"cannot create {what} {out}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise TrajplanError(f"cannot write {what} {out}: {exc.strerror or exc}") from None


def file_size_limit() -> int | None:
    """The most bytes one file may hold here (`ulimit -f`, RLIMIT_FSIZE); None: no limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def free_disk(directory: str | Path) -> int:
    """Free bytes for this user on the filesystem of `directory` (or its nearest existing
    parent: the folder may not exist yet)."""
    d = Path(directory).absolute()
    while not d.exists() and d != d.parent:
        d = d.parent
    st = os.statvfs(d)
    return st.f_bavail * st.f_frsize


def check_disk(
    directory: str | Path, total: float, largest: float | None = None, what: str = "the output"
) -> None:
    """Refuse to start when `what` (`total` bytes, its largest file `largest`) will not fit
    in `directory`: too little free space, or a file larger than `ulimit -f` allows."""
    largest = total if largest is None else largest
    limit = file_size_limit()
    if limit is not None and largest > limit:
        raise TrajplanError(
            f"{what} writes a file of about {size_text(largest)} into {directory}, but files "
            f"may hold at most {size_text(limit)} here (ulimit -f): raise the limit or "
            "write less"
        )
    free = free_disk(directory)
    if total > free:
        raise TrajplanError(
            f"{what} needs about {size_text(total)} in {directory}, {size_text(free)} are "
            "free: free some space or choose another folder"
        )


def checkpoint_bytes(n_params: int) -> int:
    """Disk of a TT run's checkpoints: model, best and best-eval weights and state.pt
    (weights and two Adam moments), float32, plus the small files."""
    return 4 * n_params * 6 + 2**20


def eval_bytes(episodes: int, steps: int) -> int:
    """eval.json of `episodes` episodes of at most `steps` steps (three numbers a step,
    indented: ~90 bytes), plus eval.png."""
    return episodes * (steps * 90 + 1024) + 2**19


def dataset_bytes(steps: int, obs_dim: int, act_dim: int) -> int:
    """A Minari dataset of `steps` steps: observations (one more per episode), actions,
    rewards and flags, at most 8 bytes a number, plus HDF5 and metadata overhead."""
    return steps * (2 * obs_dim + act_dim + 3) * 8 + 2**16


def max_threads() -> int:
    """The most CPU threads a command may use: 4 per core (more only slows it down, and
    thousands crash OpenMP)."""
    return 4 * (os.cpu_count() or 1)
