"""What the commands share: the consoles, --threads, and the planning flags with --set.

`plan` and `eval` take the same planning flags (`PLAN_FLAGS`, declared once) and any number
of `--set plan.KEY=VALUE`; `@plan_options` hands them to the command as one `PlanOptions`,
whose `apply` is the only place they meet a run's plan config (through
`trajplan.evaluation.evaluate.with_overrides`, after the flags).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from trajplan.errors import TrajplanError

if TYPE_CHECKING:
    from trajplan.config import PlanConfig

console = Console()
err_console = Console(stderr=True)

HELP = {"help_option_names": ["-h", "--help"]}  # inherited by every subcommand

THREADS = typer.Option(
    None,
    help="CPU intra-op threads (default: torch's). Rolling a TT model out runs many tiny ops: "
    "1 is often fastest, and much faster when other jobs keep the cores busy.",
)
TRAIN_THREADS = typer.Option(
    None,
    help="CPU intra-op threads for training (default: torch's). On cores busy with other "
    "jobs, fewer can be faster.",
)
PLAN_THREADS = typer.Option(
    1,
    help="CPU intra-op threads per process. Planning runs many small ops: on a busy 2-core "
    "machine 2 threads (torch's default there) took 20 s a step where 1 took 0.3-0.7 s, "
    "same episode (docs/usage.md). More can help large beams on idle cores.",
)


def _check_seed(param: typer.CallbackParam, value: int | None) -> int | None:
    from trajplan.config import check_seed

    return None if value is None else check_seed(value, (param.opts or ["--seed"])[0])


def seed_option(default: int | None, help: str) -> Any:
    """A --seed option: checked as every seed is (0 <= SEED < 2^32, config.check_seed)."""
    return typer.Option(default, help=f"{help} In [0, 2^32 - 1].", callback=_check_seed)


WEIGHTS = typer.Option(
    "last",
    help="Which weights of a TT run: last (as the reference), best (lowest training loss) or "
    "best-eval (best score of the evaluations during training, train.eval_every > 0).",
)


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads (None: leave torch's default); 1 to guards.max_threads()."""
    if threads is not None:
        from trajplan.guards import max_threads

        if threads < 1:
            raise TrajplanError(f"--threads must be at least 1, got {threads}")
        if threads > max_threads():
            raise TrajplanError(
                f"--threads {threads} is more than 4 per CPU core here: use at most "
                f"{max_threads()} (more only slows planning and training down)"
            )
        import torch

        torch.set_num_threads(threads)


def score_text(score: float | None) -> str:
    return "-" if score is None else f"{score:.1f}"


PLAN_HELP = "Planning (defaults: the run's own plan config; docs/method.md, Planner)"

# The planning flags of `plan` and `eval`, declared once: (flag, PlanConfig field, type, help).
PLAN_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("horizon", "horizon", int, "Planned steps per plan (reference default 15)."),
    ("beam_width", "beam_width", int, "Beams kept after every step (128)."),
    ("n_expand", "n_expand", int, "Copies of each beam before sampling actions (2)."),
    ("cdf_act", "cdf_act", float, "Action cdf filter threshold in (0, 1] (0.6)."),
    ("k_act", "k_act", int, "Top-k filter for actions (none)."),
    ("context", "max_context_transitions", int, "Past transitions kept as context (5)."),
    ("plan_freq", "plan_freq", int, "Replan every N env steps (1)."),
    (
        "prior",
        "prior",
        str,
        "A BC run (trajplan bc) or *.actor.safetensors whose actions, with a little noise, "
        "are the search's candidates (plan.prior_share: 1 = all, 0.5 = half, the rest the "
        "model's; plan.prior_noise): the model scores them. Not the reference (none).",
    ),
    (
        "critic",
        "critic",
        str,
        "TT + Q: an IQL run (trajplan iql) whose critic scores the beams instead of TT's "
        "value: the model's rewards up to the last planned state, then Q of that state and "
        "action. Not the reference (none).",
    ),
    (
        "objective",
        "objective",
        str,
        "What ranks the beams: return (TT's predicted rewards and value, or the critic) or "
        "likelihood (imitation: the model's log-likelihood of the plan's action and "
        "observation tokens, no reward or value; train on expert data).",
    ),
    ("mode", "mode", str, "cached (fast, exact) or full (reference: whole window per token)."),
    (
        "window",
        "window",
        str,
        "slide (reference) or grow: keep the plan's window start, slide only past the "
        "model's block (faster, not the published semantics).",
    ),
)


@dataclass(frozen=True)
class PlanOptions:
    """What the planning flags and `--set plan.KEY=VALUE` of one command line ask for."""

    fields: dict[str, Any]
    sets: tuple[str, ...] = ()

    def apply(self, cfg: PlanConfig) -> PlanConfig:
        """A checked copy of a run's plan config with these options applied."""
        from trajplan.evaluation.evaluate import with_overrides

        try:
            return with_overrides(cfg, self.sets, **self.fields)
        except TrajplanError as exc:  # echo the --set as given: plan.horizon.x=3, not horizon.x=3
            text = str(exc)
            for item in self.sets:
                rest = item.strip().partition(".")[2]
                text = text.replace(f"override {rest!r}", f"--set {item.strip()!r}")
            if text == str(exc):
                raise
            raise TrajplanError(text) from None


def plan_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the planning flags and `--set`; it receives them as `planning`."""
    sig = inspect.signature(command, eval_str=True)
    params = [p for name, p in sig.parameters.items() if name != "planning"]
    kw = inspect.Parameter.KEYWORD_ONLY
    for flag, _, tp, text in PLAN_FLAGS:
        option = typer.Option(None, help=text, rich_help_panel=PLAN_HELP)
        params.append(inspect.Parameter(flag, kw, default=option, annotation=tp | None))
    sets = typer.Option(
        None,
        "--set",
        help="Set any plan config key, repeatable: --set plan.prior_noise=0.2 (after the flags).",
        rich_help_panel=PLAN_HELP,
    )
    params.append(inspect.Parameter("plan_set", kw, default=sets, annotation=list[str] | None))

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        fields = {field: kwargs.pop(flag) for flag, field, _, _ in PLAN_FLAGS}
        planning = PlanOptions(fields, tuple(kwargs.pop("plan_set") or ()))
        return command(**kwargs, planning=planning)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return wrapper


def parse_hidden(hidden: str) -> list[int]:
    """--hidden "256,256" -> [256, 256]; anything else is one line."""
    try:
        return [int(h) for h in hidden.split(",")]
    except ValueError:
        raise TrajplanError(f"--hidden must be comma-separated integers, got {hidden!r}") from None
