"""`trajplan hub push / pull` (trajplan.hub.share)."""

from __future__ import annotations

import typer

from trajplan.cli.options import console


def hub_push(
    run: str = typer.Argument(..., help="Run directory (TT, BC or IQL) to share."),
    repo_id: str = typer.Argument(..., help="Hub model repository, e.g. you/halfcheetah-tt."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    stage: str = typer.Option(
        None, help="Only build the upload folder (files + model card) in this new folder."
    ),
    eval_json: str = typer.Option(
        None, "--eval", help="eval.json to share (default: RUN/eval/eval.json when present)."
    ),
    token: str = typer.Option(None, help="Hub token (default: your saved Hub login or HF_TOKEN)."),
) -> None:
    """Upload a run with a generated model card (dataset, config, scores, how to reproduce).

    Example: trajplan hub push runs/halfcheetah-medium-... you/halfcheetah-tt
    """
    from trajplan.hub.share import build_folder, push

    if stage:
        folder = build_folder(run, stage, repo_id, eval_json)
        console.print(f"staged {run} for {repo_id} in {folder} (card: {folder}/README.md)")
        return
    url = push(run, repo_id, private=private, token=token, evaluation=eval_json)
    console.print(f"pushed {run} -> {url}", highlight=False)


def hub_pull(
    repo_id: str = typer.Argument(..., help="Hub model repository, e.g. you/halfcheetah-tt."),
    out: str = typer.Option(..., help="Folder to create: a run directory for plan/eval."),
    revision: str = typer.Option(None, help="Branch, tag or commit (default: main)."),
    token: str = typer.Option(None, help="Hub token, for private repositories."),
) -> None:
    """Download a run pushed with `trajplan hub push`; plan/eval take the folder as a run.

    Example: trajplan hub pull you/halfcheetah-tt --out runs/hc-tt && trajplan eval runs/hc-tt
    """
    from trajplan.hub.share import pull

    path = pull(repo_id, out, revision=revision, token=token)
    console.print(f"pulled {repo_id} into {path}: trajplan eval {path}", highlight=False)
