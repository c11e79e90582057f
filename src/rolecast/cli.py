"""The ``rolecast`` command line: a thin layer over the stage modules.

    rolecast speakers SCRIPTS...                      who speaks, how often
    rolecast prepare SCRIPTS... --character NAME --out PACK

Run ``rolecast COMMAND --help`` for each command's options. Errors a user can fix
are printed as one line on stderr with exit code 2; heavy libraries are imported
inside the commands that need them.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from . import __version__
from .errors import RolecastError, SettingsError
from .settings import (
    BackendSettings,
    EvalSettings,
    GenerationSettings,
    PerformerSettings,
    PrepareSettings,
    ServeSettings,
    TelegramSettings,
    TrainSettings,
    click_options,
    load_config,
    resolve,
)

log = logging.getLogger("rolecast")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="rolecast")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, envvar="ROLECAST_CONFIG", help="TOML config file (sections: prepare, generation, performer, backend, serve, train, eval).")
@click.option("-v", "--verbose", count=True, help="Say what each stage does (-vv: debug, libraries included).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only: no warnings, no progress bars.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int, quiet: bool) -> None:
    """Turn a TV series' scripts into a chatbot that talks like one of its characters."""
    logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Default: progress bars, warnings and a short summary; -v: each stage's decisions.
    level = logging.ERROR if quiet else logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.getLogger("rolecast").setLevel(level)
    ctx.obj = {"config": load_config(config_path)}


def config(ctx: click.Context) -> dict:
    return (ctx.find_root().obj or {}).get("config", {})


def ingest_options(func):
    """Options shared by every command that reads scripts."""
    return click_options(
        PrepareSettings,
        exclude=("character", "context_turns", "min_words", "max_words", "max_context_chars", "split", "seed", "style", "index"),
    )(func)


@cli.command()
@click.argument("scripts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top", type=int, default=30, show_default=True, help="How many speakers to list.")
@ingest_options
@click.pass_context
def speakers(ctx: click.Context, scripts: tuple[Path, ...], top: int, **options) -> None:
    """List who speaks in SCRIPTS, and how often."""
    from rich.console import Console
    from rich.table import Table

    from .ingest import ingest

    settings = resolve(PrepareSettings, {"character": "-", **options}, config(ctx))
    script, report = ingest(list(scripts), settings)
    counts = script.speakers()
    table = Table(title=f"{script.show}: {len(counts):,} speakers, {len(script.lines):,} lines")
    for column in ("speaker", "lines", "share", "also written as"):
        table.add_column(column, justify="right" if column in ("lines", "share") else "left")
    total = sum(counts.values()) or 1
    for name, n in counts.most_common(top):
        variants = sorted({v.strip() for v in report.merged_speakers.get(name, [])} - {name})
        table.add_row(name, f"{n:,}", f"{n / total:.1%}", ", ".join(variants[:4]) + (" ..." if len(variants) > 4 else ""))
    Console().print(table)


@cli.command()
@click.argument("scripts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Pack folder to write (replaced atomically).")
@click_options(PrepareSettings)
@click.pass_context
def prepare(ctx: click.Context, scripts: tuple[Path, ...], out: Path, **options) -> None:
    """Build a character pack from SCRIPTS: clean script, examples, card, profile."""
    from .prepare import prepare as run_prepare

    settings = resolve(PrepareSettings, options, config(ctx))
    summary = run_prepare(list(scripts), settings, out)
    click.echo(summary)


def chat_options(func):
    """Generation, performer and backend settings, for every command that talks."""
    for cls in (BackendSettings, PerformerSettings, GenerationSettings):
        func = click_options(cls)(func)
    return func


def split_options(options: dict, ctx: click.Context, classes=(BackendSettings, PerformerSettings, GenerationSettings)):
    """One resolved settings object per class, each from its own options, the config file and the environment."""
    conf = config(ctx)
    return [resolve(cls, {k: options.pop(k) for k in list(options) if k in cls.model_fields}, conf) for cls in classes]


def load_performer(pack: Path, options: dict, ctx: click.Context):
    from .chat.performer import Performer

    backend, perf, gen = split_options(options, ctx)
    return Performer.load(pack, backend, perf=perf, gen=gen)


@cli.command()
@click.argument("pack", type=click.Path(path_type=Path))
@chat_options
@click.pass_context
def chat(ctx: click.Context, pack: Path, **options) -> None:
    """Chat with the character of PACK in the terminal (streamed)."""
    from .chat.terminal import ChatSession, run_terminal

    run_terminal(ChatSession(load_performer(pack, options, ctx)))


@cli.command()
@click.argument("pack", type=click.Path(path_type=Path))
@click.argument("message")
@click.option("--json", "as_json", is_flag=True, help="Print the reply with every candidate and its scores as JSON.")
@chat_options
@click.pass_context
def say(ctx: click.Context, pack: Path, message: str, as_json: bool, **options) -> None:
    """One reply of the character of PACK to MESSAGE."""
    import json

    performer = load_performer(pack, options, ctx)
    reply = performer.reply([], message)
    if as_json:
        click.echo(json.dumps(reply.as_dict(), indent=2, ensure_ascii=False))
        return
    click.echo(reply.text)
    for notice in reply.notices:
        click.echo(f"({notice})", err=True)


@cli.command()
@click.argument("pack", type=click.Path(path_type=Path))
def index(pack: Path) -> None:
    """(Re)build the retrieval index of PACK: the character's real exchanges, embedded."""
    from .chat.retrieval import build_index
    from .pack import Pack

    built = build_index(Pack.open(pack))
    click.echo(f"Indexed {len(built):,} exchanges into {pack / 'index'}")


@cli.group()
def style() -> None:
    """The style classifier: does a reply sound like the character?"""


@style.command("train")
@click.argument("pack", type=click.Path(path_type=Path))
@click.option("--method", default="auto", show_default=True, help="Classifier (see rolecast.chat.style).")
@click.option("--max-minutes", type=float, default=5.0, show_default=True, help="Training time budget.")
def style_train(pack: Path, method: str, max_minutes: float) -> None:
    """Train the style classifier of PACK on its held-out split and report AUC."""
    from .chat.style import train_style
    from .pack import Pack

    report = train_style(Pack.open(pack), method=method, max_minutes=max_minutes)
    click.echo(f"Style classifier ({report['method']}): ROC-AUC {report['roc_auc']:.3f}, "
               f"accuracy {report['accuracy']:.3f} on held-out episodes; report in {pack / 'style' / 'report.json'}")


@cli.command("eval")
@click.argument("pack", type=click.Path(path_type=Path))
@click_options(EvalSettings)
@click_options(BackendSettings)
@click_options(GenerationSettings, exclude=("seed",))
@click.pass_context
def eval_command(ctx: click.Context, pack: Path, **options) -> None:
    """Compare variants (base, prompt, retrieval, lora, lora+rerank) on PACK's test episodes; writes PACK/eval."""
    from .evaluation.evaluate import evaluate, recommend
    from .pack import Pack

    settings, backend, gen, perf = split_options(options, ctx, (EvalSettings, BackendSettings, GenerationSettings,
                                                                PerformerSettings))
    metrics = evaluate(Pack.open(pack), settings, backend, gen, perf)  # the performer settings the user serves with
    best = recommend(metrics)
    judges = metrics["judges"]
    click.echo(f"Evaluated {', '.join(metrics['variants'])} on {metrics['examples']} test exchanges; "
               f"report: {pack / 'eval' / 'report.md'}")
    click.echo(f"Judges: coherence AUC {judges['coherence']['auc']:.3f} on real vs shuffled replies"
               f"{'' if judges['coherence']['trusted'] else ' (not trusted)'}, held-apart style AUC "
               f"{judges['held_apart']['auc']:.3f}")
    if best:
        click.echo(f"Serve {best}: {metrics['recommendation']['why']}.")
    elif metrics.get("recommendation"):
        click.echo(f"No recommendation: {metrics['recommendation']['why']}.")


@cli.command()
@click.argument("scripts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Pack folder to build or update.")
@click.option("--train/--no-train", "do_train", default=False, help="Fine-tune a LoRA and export it for llama.cpp.")
@click.option("--eval/--no-eval", "do_eval", default=True, help="Write the evaluation report.")
@click_options(PrepareSettings)
@click_options(TrainSettings, exclude=("seed", "resume"))
@click_options(EvalSettings, exclude=("seed",))
@click_options(BackendSettings, exclude=("adapter", "no_adapter"))
@click_options(GenerationSettings, exclude=("seed",))
@click.pass_context
def build(ctx: click.Context, scripts: tuple[Path, ...], out: Path, do_train: bool, do_eval: bool, **options) -> None:
    """Scripts → a served-ready pack: prepare, (train, export,) eval; unchanged stages are skipped."""
    from .build import Plan
    from .build import build as run_build

    prep, train_settings, eval_settings, backend, gen = split_options(
        options, ctx, (PrepareSettings, TrainSettings, EvalSettings, BackendSettings, GenerationSettings))
    plan = Plan(list(scripts), prep, out, train_settings if do_train else None, eval_settings if do_eval else None,
                backend, gen)
    for line in run_build(plan):
        click.echo(line)
    click.echo(f"Ready: rolecast serve {out}")


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@cli.command()
@click.argument("packs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click_options(ServeSettings)
@chat_options
@click.pass_context
def serve(ctx: click.Context, packs: tuple[Path, ...], **options) -> None:
    """Serve PACKS: OpenAI-compatible API and web chat (http://127.0.0.1:8000 by default)."""
    settings, backend, perf, gen = split_options(
        options, ctx, (ServeSettings, BackendSettings, PerformerSettings, GenerationSettings))
    if settings.host not in LOOPBACK and not settings.api_keys:
        raise SettingsError(f"refusing to serve on {settings.host} without an API key: anyone on the network could use it",
                            "pass --api-key KEY (or set ROLECAST_API_KEYS), or bind --host 127.0.0.1")
    import uvicorn

    from .serve.server import create_app
    from .serve.service import ChatService

    service = ChatService.open(list(packs), settings, backend, perf, gen)
    app = create_app(settings, service)
    log.info("serving %s on http://%s:%d", ", ".join(sorted(service.characters)), settings.host, settings.port)
    try:
        # Behind a reverse proxy, its X-Forwarded-For names the browser (only from the proxies the user trusts).
        proxies = {"proxy_headers": True, "forwarded_allow_ips": ",".join(settings.trusted_proxies)} \
            if settings.trusted_proxies else {"proxy_headers": False}
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", **proxies)
    finally:
        service.close()


@cli.command()
@click.argument("packs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("docker-compose.gpu.yml"),
              show_default=True, help="The compose file to write.")
def compose(packs: tuple[Path, ...], out: Path) -> None:
    """Write a GPU compose file for PACKS: vLLM with the base they were trained on and each pack's LoRA, rolecast over it."""
    from .files import atomic_write
    from .serve.compose import render

    atomic_write(out, render(list(packs)))
    click.echo(f"Wrote {out}; run it with: ROLECAST_API_KEYS=change-me docker compose -f {out} up")


@cli.command()
@click.argument("packs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click_options(TelegramSettings)
@chat_options
@click.pass_context
def telegram(ctx: click.Context, packs: tuple[Path, ...], **options) -> None:
    """Serve PACKS as a Telegram bot (long polling); the first pack is the default character."""
    settings, backend, perf, gen = split_options(
        options, ctx, (TelegramSettings, BackendSettings, PerformerSettings, GenerationSettings))
    import asyncio

    from .errors import require

    require("aiogram", "serve")
    from .serve.service import ChatService
    from .serve.telegram import require_token, run_bot

    require_token(settings)  # before loading any model
    limits = resolve(ServeSettings, {"db": settings.db}, config(ctx))  # workers, queue: as for `serve`
    service = ChatService.open(list(packs), limits, backend, perf, gen)
    try:
        asyncio.run(run_bot(service, settings))
    finally:
        service.close()


@cli.command("train")
@click.argument("pack", type=click.Path(path_type=Path))
@click_options(TrainSettings)
@click.option("--progress/--no-progress", default=True, help="Show the progress bar (steps, loss, ETA).")
@click.pass_context
def train_command(ctx: click.Context, pack: Path, progress: bool, **options) -> None:
    """Fine-tune a LoRA adapter on PACK's examples (TRL + PEFT); writes PACK/adapter and PACK/train/."""
    from .training.runtime import processes
    from .training.sft import resume_options
    from .training.sft import train as run_train

    settings = resolve(TrainSettings, options, config(ctx))
    if settings.dpo or settings.orpo:  # the preference stage alone, on the SFT adapter trained before
        from .training.preference import tune

        tuned = tune(pack, settings, progress=progress)
        click.echo(f"{tuned['method'].upper()} on {tuned['pairs']} pairs ({tuned['own_samples']} own samples, "
                   f"{tuned['other_scenes']} lines from other scenes), {tuned['steps']} steps in {tuned['seconds']:.0f} s; "
                   f"the SFT adapter is kept in {pack / tuned['sft_adapter']}. For llama.cpp: rolecast export {pack}")
        return
    if options.get("resume"):  # the interrupted run's settings, overridden by the ones given now
        options = resume_options(pack, options)
    result = run_train(pack, resolve(TrainSettings, options, config(ctx)), progress=progress)
    if processes()[0]:  # under accelerate launch the first process speaks for all
        return
    loss = f"validation loss {result.eval_loss:.3f}" if result.eval_loss is not None else "no validation loss"
    click.echo(f"Trained {result.steps} steps ({result.stopped.replace('_', ' ')}), {loss}; adapter: {result.adapter}; "
               f"curves: {pack / 'train' / 'loss.png'}")
    if result.stopped in ("max_steps", "max_minutes"):
        click.echo(f"Continue with: rolecast train {pack} --resume (raise --max-steps or --max-minutes)")
    click.echo(f"For llama.cpp: rolecast export {pack}")


@cli.command("export")
@click.argument("pack", type=click.Path(path_type=Path))
@click.option("--merged", type=click.Choice(["q8_0", "f16"]), default=None,
              help="Also write PACK/merged-<type>.gguf: the base with the LoRA merged in (GGUF bases only).")
def export_command(pack: Path, merged: str | None) -> None:
    """Convert PACK's LoRA adapter to a GGUF LoRA for llama.cpp (PACK/adapter.gguf)."""
    from .training.export import export

    for path in export(pack, merged=merged).values():
        click.echo(f"Wrote {path}")


@cli.group()
def card() -> None:
    """Character cards (SillyTavern V1/V2/V3, JSON or PNG) in and out of a pack."""


@card.command("import")
@click.argument("card_file", type=click.Path(path_type=Path))
@click.option("--pack", "pack_path", type=click.Path(path_type=Path), required=True, help="The pack whose card to replace.")
@click.option("--merge", is_flag=True, help="Take only the card's non-empty fields; keep the pack's others.")
def card_import(card_file: Path, pack_path: Path, merge: bool) -> None:
    """Put CARD_FILE (.json or .png) into a pack, replacing (or, with --merge, updating) its card."""
    from .pack import Pack
    from .pack.card import import_card

    imported = import_card(Pack.open(pack_path), card_file, merge=merge)
    click.echo(f"{'Merged' if merge else 'Imported'} the card of {imported['data']['name']} into {pack_path}")


@card.command("export")
@click.argument("pack_path", type=click.Path(path_type=Path))
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a SillyTavern card PNG here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the card JSON here.")
@click.option("--avatar", type=click.Path(dir_okay=False, path_type=Path), help="Picture for the PNG (default: the pack's avatar.png, else initials).")
def card_export(pack_path: Path, png_path: Path | None, json_path: Path | None, avatar: Path | None) -> None:
    """Write PACK_PATH's card as a file SillyTavern imports."""
    from .pack import Pack
    from .pack.card import export_card

    if not png_path and not json_path:
        raise SettingsError("nothing to write", "give --png CARD.png and/or --json CARD.json")
    written = export_card(Pack.open(pack_path), json_path, png_path, avatar)
    click.echo("Wrote " + ", ".join(map(str, written)))


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """Named bases (use a name as --base or --model): repos, licence, size, RAM, estimated hours an epoch takes."""
    if ctx.invoked_subcommand:
        return
    import json

    from rich.console import Console
    from rich.table import Table

    from .models.bases import TYPICAL_EPOCH_TOKENS, table

    rows = table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    out = Table(title=f"Named bases. Epoch hours are estimates for a {TYPICAL_EPOCH_TOKENS:,}-token pack (House), scaled "
                      "from the 135M base's measured rate on 2 CPU cores; GPU: a FLOP estimate (A100 at 40%)")
    for column in ("name", "train on (HF)", "serve (GGUF)", "licence", "gated", "params", "RAM serve/train",
                   "epoch h: CPU bf16 / fp32 / GPU"):
        out.add_column(column)
    for r in rows:
        hours = r["epoch_hours_estimate"]
        out.add_row(r["name"], r["train_repo"], r["gguf"], r["licence"], "yes" if r["gated"] else "no",
                    f"{r['params_b']:.2f}B", f"{r['ram_serve_gb']} / {r['ram_train_gb']} GB",
                    f"~{hours['bf16']:.1f} / ~{hours['fp32']:.1f} / ~{hours['gpu']:.2f}")
    Console().print(out)


@models.command("pull")
@click.argument("name")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def models_pull(name: str, no_progress: bool) -> None:
    """Download NAME's official GGUF into the Hugging Face cache, checked against the hub's sha256."""
    from .models.bases import NAMED_BASES, named, pull

    base = named(name)
    if base is None:
        raise SettingsError(f"no named base '{name}'", "pick one of: " + ", ".join(NAMED_BASES))
    click.echo(f"{base.name}: {pull(base, progress=not no_progress)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: RolecastError → one line on stderr and exit code 2."""
    try:
        cli.main(args=argv, prog_name="rolecast", standalone_mode=False)
    except RolecastError as err:
        click.echo(f"error: {err}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
