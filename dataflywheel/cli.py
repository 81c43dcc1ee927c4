"""The `flywheel` command. Thin: every command calls the library and prints the result."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dataflywheel.errors import FlywheelError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="dataflywheel: select, enhance, synthesize, distill and evolve LLM training data.",
)


def _version(value: bool) -> None:
    if value:
        import dataflywheel

        print(f"dataflywheel {dataflywheel.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version"
    ),
) -> None:
    """dataflywheel: select, enhance, synthesize, distill and evolve LLM training data."""


# Piped output (CI logs, tests) gets a wide console so tables are not folded into unreadable columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _fail(e: Exception, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {e}", highlight=False)
    raise typer.Exit(code)


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="recipe YAML"),
    run_dir: Path | None = typer.Option(None, help="run directory (default: runs/<recipe name>)"),
    fresh: bool = typer.Option(False, help="recompute every step instead of reusing finished ones"),
    quiet: bool = typer.Option(False, help="no progress bars"),
    report: bool = typer.Option(True, help="write report.html in the run directory"),
    executor: str | None = typer.Option(None, help="local or ray (default: the recipe's `executor`)"),
    address: str | None = typer.Option(None, help='Ray cluster address ("auto", "ray://head:10001")'),
    workers: int | None = typer.Option(None, help="Ray: parallel tasks or actors per step"),
    retry_failed: bool = typer.Option(
        False, help="ask again the model calls that failed in finished steps (and redo the steps after)"
    ),
) -> None:
    """Run a recipe: reuses finished steps and resumes an interrupted one."""
    from dataflywheel.engine.executor import BudgetReached
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.errors import RecipeError
    from dataflywheel.recipe.validate import validate_file

    rec, ops, problems = validate_file(recipe)
    if problems:
        _fail(RecipeError(problems, str(recipe)), 2)
    target = run_dir or Path("runs") / rec.name
    try:
        kind = executor or ("ray" if address else rec.executor)
        options = {"progress": not quiet and sys.stderr.isatty(), "retry_failed": retry_failed}
        if kind == "ray":
            from dataflywheel.engine.ray_executor import RayExecutor

            runner = RayExecutor(rec, ops, target, address=address, workers=workers, **options)
        elif kind == "local":
            runner = LocalExecutor(rec, ops, target, **options)
        else:
            raise FlywheelError(f"--executor must be local or ray, got {kind!r}")
        result = runner.run(fresh=fresh)
    except BudgetReached as e:
        if report:
            from dataflywheel.report import write_report

            write_report(target)
        _fail(e, 3)
    except FlywheelError as e:
        _fail(e)
    if report:
        from dataflywheel.report import write_report

        write_report(result.run_dir)
    console.print(summary_table(result))
    metrics = [
        (f"{s.index}@{s.iteration}" if s.iteration else s.index, s.op, s.stats["metrics"])
        for s in result.steps
        if "metrics" in s.stats
    ]
    if metrics:
        view = Table(title="evaluations")
        for col in ("step", "op", "metrics"):
            view.add_column(col)
        for index, op, values in metrics:
            shown = ", ".join(f"{k}={v}" for k, v in values.items() if not isinstance(v, list | dict))
            view.add_row(str(index), op, shown)
        console.print(view)
    console.print(f"output: [bold]{result.output_path}[/] ({result.rows_out} rows)   run: {result.run_dir}")
    if (result.run_dir / "report.html").exists() and report:
        console.print(f"report: {result.run_dir / 'report.html'}")


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="a run directory (holds manifest.json)"),
    compare: Path | None = typer.Option(None, help="a `flywheel compare` folder to add its curve"),
    out: Path | None = typer.Option(None, help="where to write (default: RUN_DIR/report.html)"),
) -> None:
    """(Re)build the self-contained HTML report of a run."""
    import json

    from dataflywheel.report import build_report

    if not (run_dir / "manifest.json").exists():
        _fail(FlywheelError(f"{run_dir}: not a run directory (no manifest.json)"))
    results = None
    if compare is not None:
        path = compare / "results.json" if compare.is_dir() else compare
        if not path.exists():
            _fail(FlywheelError(f"{path}: no compare results (run `flywheel compare` first)"))
        results = json.loads(path.read_text())
    console.print(f"report: {build_report(run_dir, results, out)}")


def summary_table(result) -> Table:
    """One line per step that fits an 80-column terminal: rows in and out, drops with the most common
    reason (cut to fit), failed model calls, and seconds (or how the step was reused)."""
    from rich import box

    table = Table(title=f"run {result.run_dir.name}", box=box.SIMPLE_HEAD, pad_edge=False)
    rows = []
    for s in result.steps:
        dropped = sum(s.dropped.values())
        top = next(iter(s.dropped.items()), None)
        failed = sum(u.get("failed", 0) for u in s.stats.get("models", {}).values())
        rows.append(
            (
                f"{s.index}@{s.iteration}" if s.iteration else str(s.index),
                s.op,
                f"{s.rows_in:,}",
                f"{s.rows_out:,}",
                f"{dropped:,}: {top[0]}" + (f" ({top[1]:,})" if dropped != top[1] else "") if top else "",
                f"{failed:,}" if failed else "",
                f"{s.seconds:.1f}" if s.status == "computed" else s.status,
            )
        )
    names = ("step", "op", "in", "out", "dropped", "failed", "s")
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    # 80 columns less the others, three spaces between columns and one at each edge: the drops' room
    room = max(7, 80 - sum(w for i, w in enumerate(widths) if i != 4) - 3 * (len(names) - 1) - 2)
    rows = [(*r[:4], r[4] if len(r[4]) <= room else r[4][: room - 1] + "…", *r[5:]) for r in rows]
    for name in names:
        table.add_column(name, justify="left" if name in ("op", "dropped") else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


@app.command()
def validate(recipe: Path = typer.Argument(..., help="recipe YAML")) -> None:
    """Check a whole recipe before running it: ops, parameters, models, paths and the column flow."""
    from dataflywheel.recipe.validate import validate_file

    rec, ops, problems = validate_file(recipe)
    if problems:
        err_console.print(f"[bold red]{recipe}: {len(problems)} problem(s)[/]")
        for p in problems:
            err_console.print(f"  - {p}", highlight=False)
        raise typer.Exit(2)
    console.print(f"[green]ok[/] {recipe}: {len(rec.inputs)} input(s), {len(ops)} step(s)")
    where = rec.output_path(Path("runs") / rec.name)
    note = "" if Path(rec.output.path or "x").is_absolute() else " (in the run directory; --run-dir moves it)"
    console.print(f"  output: {where}{note}", highlight=False)
    for line in budget_lines(ops):
        console.print(f"  {line}", highlight=False)
    limits = [f"{k} <= {v}" for k, v in rec.budget.model_dump().items() if v is not None]
    if limits:
        console.print(f"  run budget (model spending): {', '.join(limits)}", highlight=False)


@app.command()
def plan(
    recipe: Path = typer.Argument(..., help="recipe YAML"),
    rows: int = typer.Option(8, min=1, help="rows of each input to run the sample on"),
) -> None:
    """Estimate a recipe's model calls, tokens, money and time per step, from a run on a sample."""
    from dataflywheel.errors import RecipeError
    from dataflywheel.experiments.plan import plan as make_plan
    from dataflywheel.recipe.validate import validate_file

    rec, ops, problems = validate_file(recipe)
    if problems:
        _fail(RecipeError(problems, str(recipe)), 2)
    try:
        p = make_plan(rec, ops, rows)
    except FlywheelError as e:
        _fail(e)
    view = Table(title=f"plan: {rec.name} ({p.rows_total:,} input rows, measured on {p.rows_sampled})")
    for col in ("step", "rows in", "model calls", "tokens", "cost ($)", "time"):
        view.add_column(col, justify="left" if col == "step" else "right")
    for s in [*p.steps, p.totals]:
        view.add_row(
            s.label,
            f"{s.rows_in:,.0f}",
            f"{s.calls:,.0f}",
            f"{s.tokens:,.0f}",
            f"{s.cost:,.4f}",
            _duration(s.seconds),
        )
    console.print(view)
    console.print(f"the two samples spent ${p.sample_cost:.4f} (every call made: the call cache was off)")
    stop = p.budget_stop()
    if p.budget.cost is not None or p.budget.tokens is not None:
        console.print(
            f"budget: the run would stop when the {stop}" if stop else "budget: the estimate stays within it",
            highlight=False,
        )
    else:
        console.print("no budget in the recipe: set `budget: {cost: ...}` to stop a run at a limit")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def budget_lines(ops: list) -> list[str]:
    """What each generator may make, as the engine will enforce it (over the whole step)."""
    from dataflywheel.ops.base import Generator, Loop

    out = []
    for op in [inner for step in ops for inner in (step.body if isinstance(step, Loop) else [step])]:
        if isinstance(op, Generator):
            b = op.params.budget
            limits = [
                f"{name} <= {v}" for name in ("rows", "tokens", "cost") if (v := getattr(b, name)) is not None
            ]
            out.append(
                f"step {op.ctx.step} {op.name}: budget " + (", ".join(limits) if limits else "unlimited")
            )
    return out


@app.command()
def ops(name: str | None = typer.Argument(None, help="an operator name for its full description")) -> None:
    """List the operators, or describe one (from its docstring and parameters)."""
    from dataflywheel.ops import catalog

    try:
        if name is None:
            console.print(catalog.table())
        else:
            console.print(catalog.describe(name))
    except FlywheelError as e:
        _fail(e)


@app.command()
def convert(
    src: Path = typer.Argument(..., help="input file"),
    dst: Path = typer.Argument(..., help="output file (.jsonl, .json, .parquet, .csv)"),
    to: str = typer.Option(..., "--to", help="alpaca | sharegpt | messages | preference | prompt_completion"),
    source_format: str = typer.Option("auto", "--from", help="input format (default: detect)"),
    on_error: str = typer.Option("raise", help="raise, or skip bad rows (listed on stderr)"),
    keep_columns: bool = typer.Option(False, help="also write id, lineage and extra columns"),
) -> None:
    """Convert a dataset between formats."""
    from dataflywheel.data import io

    try:
        result = io.read_all(str(src), source_format, on_error=on_error)
        with io.Writer(str(dst), to, keep_columns=keep_columns) as w:
            w.write_rows(result.rows)
    except FlywheelError as e:
        _fail(e)
    for d in result.dropped:
        err_console.print(f"skipped: {d.detail}", highlight=False)
    console.print(
        f"wrote {len(result.rows)} rows to {dst} as {to}"
        + (f"; skipped {len(result.dropped)} bad rows" if result.dropped else "")
    )


@app.command()
def inspect(
    data: Path = typer.Argument(..., help="a dataset file or folder"),
    source_format: str = typer.Option("auto", "--format", help="input format (default: detect)"),
    samples: int = typer.Option(2, help="sample rows to show"),
) -> None:
    """Detected format, row count, field statistics, a length histogram and sample rows."""
    from dataflywheel.data import inspect as insp

    try:
        report = insp.inspect_file(str(data), source_format)
    except FlywheelError as e:
        _fail(e)
    insp.render(report, console, samples)


@app.command()
def drops(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    limit: int = typer.Option(20, help="rows to show"),
    op: str | None = typer.Option(None, help="only rows this op dropped"),
    reason: str | None = typer.Option(None, help="only rows whose reason contains this text"),
) -> None:
    """The drop log of a run: every row that did not reach the output, with op, reason and detail."""
    import pyarrow.compute as pc

    from dataflywheel.engine.runinfo import drop_log

    try:
        table = drop_log(run_dir)
    except FlywheelError as e:
        _fail(e)
    total = table.num_rows
    if op:
        table = table.filter(pc.equal(table.column("op"), op))
    if reason:
        table = table.filter(pc.match_substring(table.column("reason"), reason))
    shown = f"{table.num_rows} of {total}" if (op or reason) else f"{total}"
    view = Table(title=f"{shown} dropped rows")
    for col in ("step", "op", "id", "reason", "detail"):
        view.add_column(col)
    for row in table.slice(0, limit).to_pylist():
        view.add_row(str(row["step"]), row["op"], row["id"] or "", row["reason"], (row["detail"] or "")[:80])
    console.print(view)


@app.command()
def lineage(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    row_id: str = typer.Argument(..., help="the id of any row the run wrote (output, step shard)"),
) -> None:
    """Where a row came from: the row, its parents, theirs, back to the input rows, with the step, loop
    iteration and model that made each."""
    from dataflywheel.engine.lineage import RowIndex

    try:
        path = RowIndex(run_dir).trace(row_id)
    except FlywheelError as e:
        _fail(e)
    view = Table(title=f"lineage of {row_id}: {len(path)} row(s)")
    for col in ("depth", "id", "origin", "iteration", "model", "made at", "text"):
        view.add_column(col, overflow="fold")
    for a in path:
        view.add_row(
            str(a.depth),
            a.id,
            a.origin or "(not in this run)",
            str(a.iteration),
            a.model or "",
            a.step,
            a.text[:80],
        )
    console.print(view)


@app.command()
def calibrate(
    data: Path = typer.Argument(..., help="a dataset with a score column and a label column"),
    score: list[str] = typer.Option(..., "--score", help="score column (repeat for several)"),
    label: str = typer.Option(..., "--label", help="label column, e.g. preference"),
    positive: str | None = typer.Option(None, help="label value that counts as positive (e.g. 2)"),
    threshold: float | None = typer.Option(None, help="decision threshold (default: the most accurate one)"),
    on_error: str = typer.Option("raise", help="raise, or skip bad rows (counted and left out)"),
) -> None:
    """How well score columns agree with a label: AUC, Spearman, and accuracy at a threshold."""
    from collections import Counter

    from dataflywheel.data import io
    from dataflywheel.evaluate.calibrate import calibrate as run_calibration

    try:
        read = io.read_all(str(data), on_error=on_error)
        rows = read.rows
        if read.dropped:
            reasons = Counter(d.reason for d in read.dropped)
            shown = ", ".join(f"{r} ({n})" for r, n in reasons.most_common())
            err_console.print(f"left out {len(read.dropped)} bad row(s): {shown}", highlight=False)
        view = Table(
            title=f"calibration against '{label}'" + (f" (positive: {positive})" if positive else "")
        )
        for col in ("score", "rows", "missing", "positives", "AUC", "Spearman", "threshold", "accuracy"):
            view.add_column(col, justify="right" if col != "score" else "left")
        for col in score:
            if rows and col not in rows[0]:
                raise FlywheelError(f"{data}: no column '{col}'; columns: {', '.join(rows[0])}")
            c = run_calibration([r.get(col) for r in rows], [r.get(label) for r in rows], positive, threshold)
            view.add_row(
                col,
                str(c.n),
                str(c.missing),
                str(c.positives),
                f"{c.auc:.3f}",
                f"{c.spearman:.3f}",
                f"{c.threshold:.3g}" + ("" if c.chosen else " (best)"),
                f"{c.accuracy:.3f}",
            )
    except FlywheelError as e:
        _fail(e)
    console.print(view)


@app.command()
def compare(
    spec: Path = typer.Argument(
        ..., help="compare YAML: base model, eval set, training settings, candidates"
    ),
    out: Path | None = typer.Option(None, help="output folder (default: runs/<name>)"),
    quiet: bool = typer.Option(False, help="no progress bars"),
) -> None:
    """The data-efficiency experiment: train the same model on each candidate dataset, evaluate all."""
    from dataflywheel.experiments.compare import load_spec, run_compare

    try:
        target = out or Path("runs") / load_spec(spec).name
        results = run_compare(spec, target, progress=not quiet and sys.stderr.isatty())
    except FlywheelError as e:
        _fail(e)
    view = Table(title=f"data efficiency ({target})")
    for col in ("candidate", "rows", "NLL", "perplexity", "win rate", "95% CI"):
        view.add_column(col, justify="left" if col == "candidate" else "right")
    for r in results:
        ci = r["win_rate_ci95"]
        view.add_row(
            r["candidate"],
            str(r["rows"]),
            f"{r['nll']:.4f}" if r["nll"] is not None else "",
            f"{r['perplexity']:.2f}" if r["perplexity"] is not None else "",
            f"{r['win_rate']:.3f}" if r["win_rate"] is not None else "",
            f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "",
        )
    console.print(view)
    console.print(
        f"table: {target / 'results.json'}   plot: {target / 'efficiency.svg'}   "
        f"report: {target / 'report.html'}"
    )


@app.command()
def serve(
    model: str = typer.Argument(
        ..., help="embedded:smollm2-135m-instruct, a local folder or checkpoint, a hub name"
    ),
    host: str = typer.Option("127.0.0.1", help="address to bind (default: this machine only)"),
    port: int = typer.Option(8000, help="port"),
    api_key: str | None = typer.Option(
        None, help="require this bearer token (or set FLYWHEEL_API_KEY)", envvar="FLYWHEEL_API_KEY"
    ),
    backend: str = typer.Option(
        "hf", help="hf or vllm for chat models; sentence-transformers for an embedder"
    ),
    embedder: str | None = typer.Option(
        None, help="also serve /v1/embeddings with this sentence-transformers model"
    ),
    name: str | None = typer.Option(None, help="model name clients use (default: MODEL)"),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto"),
    dtype: str = typer.Option("auto", help="float32, bfloat16, float16 or auto"),
    max_batch: int = typer.Option(
        64, help="rows decoded together at most (a request with n choices takes n)"
    ),
    continuous: bool = typer.Option(
        True,
        "--continuous/--no-continuous",
        help="hf models: requests join and leave the batch per step (off: whole requests batched)",
    ),
    max_queue: int = typer.Option(256, help="requests waiting at most; more are answered 429 + Retry-After"),
    insecure: bool = typer.Option(
        False, "--insecure", help="allow serving beyond this machine without an API key"
    ),
) -> None:
    """Serve a local model through an OpenAI-compatible API (chat completions, embeddings, models)."""
    import ipaddress

    import uvicorn

    from dataflywheel.models.client import build_backend
    from dataflywheel.recipe.models import ModelSpec
    from dataflywheel.serve.server import create_app

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a host name other than localhost may resolve to anything
    if not loopback and not api_key and not insecure:
        _fail(
            FlywheelError(
                f"refusing to serve on {host} without an API key: anyone who can reach it could use the "
                "model. Set FLYWHEEL_API_KEY (or --api-key), or pass --insecure to serve it open."
            )
        )
    try:
        main_backend = build_backend(
            ModelSpec(backend=backend, model=model, device=device, dtype=dtype, batch_size=max_batch)
        )
        extra = None
        if embedder:
            extra = build_backend(ModelSpec(backend="sentence-transformers", model=embedder, device=device))
    except FlywheelError as e:
        _fail(e)
    if backend == "sentence-transformers":
        main_backend, extra = None, main_backend
    err_console.print(
        f"serving [bold]{name or model}[/] on http://{host}:{port}/v1" + ("" if api_key else " (no API key)"),
        highlight=False,
    )
    uvicorn.run(
        create_app(name or model, main_backend, extra, api_key, max_batch, max_queue, continuous),
        host=host,
        port=port,
        log_level="warning",
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
