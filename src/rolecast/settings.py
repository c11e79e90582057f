"""Settings, declared once: a pydantic field (default, bounds, description) per setting.

Each settings model feeds three sources, strongest first:

1. the command line: ``--temperature 0.7`` (options are generated from the fields),
2. the environment: ``ROLECAST_TEMPERATURE=0.7``,
3. a TOML config file (``--config FILE``, ``$ROLECAST_CONFIG`` or ``./rolecast.toml``),
   in the model's section: ``[generation] temperature = 0.7``,

then the field's default. Unknown fields are refused with the list of valid ones.

    >>> from rolecast.settings import GenerationSettings, resolve
    >>> resolve(GenerationSettings, {"temperature": 0.2}).temperature
    0.2
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import SettingsError

ENV_PREFIX = "ROLECAST_"


class Settings(BaseModel):
    """Base for every settings group: unknown fields are an error, values are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    #: The section of the config file this group reads.
    section: ClassVar[str] = ""

    def updated(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated (unknown names refused)."""
        return validate(type(self), {**self.model_dump(), **changes})


class PrepareSettings(Settings):
    section: ClassVar[str] = "prepare"

    character: str = Field(..., min_length=1, description="The character to build, as named in the script (case-insensitive; first names work when unambiguous).")
    show: str | None = Field(None, description="Show name for the card; default: guessed from the file names.")
    format: Literal["auto", "table", "friends", "simpsons", "screenplay", "json", "jsonl", "pairs"] = Field("auto", description="Input format; 'auto' detects it per file.")
    speaker_col: str | None = Field(None, description="Column holding the speaker's name.")
    text_col: str | None = Field(None, description="Column holding the spoken line.")
    episode_col: str | None = Field(None, description="Column holding the episode (number or id).")
    scene_col: str | None = Field(None, description="Column holding the scene (number or id).")
    season_col: str | None = Field(None, description="Column holding the season number.")
    alias: list[str] = Field(default_factory=list, description="Speaker alias, 'Greg=House' (repeatable): the left name is counted as the right one.")
    context_turns: int = Field(10, ge=0, le=64, description="Preceding lines of the same scene given as context for each reply.")
    min_words: int = Field(1, ge=1, le=1000, description="Drop replies shorter than this many words.")
    max_words: int = Field(120, ge=1, le=5000, description="Drop replies longer than this many words.")
    max_context_chars: int = Field(2000, ge=0, le=100_000, description="Trim the oldest context turns beyond this many characters.")
    split: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="Train/validation/test fractions, split by episode (by blocks of scenes when the corpus has fewer than 3 episodes).")
    seed: int = Field(13, description="Seed for the split and any sampling in prepare.")
    repair: bool = Field(True, description="Repair upstream damage (names spliced into words, stray capitals).")
    style: bool = Field(True, description="Train the style classifier after preparing (needs the 'chat' extra).")
    index: bool = Field(True, description="Build the retrieval index after preparing (needs the 'chat' extra).")


class GenerationSettings(Settings):
    """How the model samples. Shared by every backend; a backend ignores what it cannot do."""

    section: ClassVar[str] = "generation"

    max_tokens: int = Field(64, ge=1, le=4096, description="Most tokens in one reply.")
    temperature: float = Field(0.8, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(0.92, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(50, ge=0, le=1000, description="Keep the k most likely tokens (0: all).")
    min_p: float = Field(0.05, ge=0.0, le=1.0, description="Drop tokens below this fraction of the top token's probability.")
    repeat_penalty: float = Field(1.1, ge=0.5, le=2.0, description="Penalty on tokens already in the context (1: none).")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="OpenAI-style presence penalty.")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="OpenAI-style frequency penalty.")
    dry_multiplier: float = Field(0.8, ge=0.0, le=5.0, description="DRY anti-repetition strength (0: off).")
    dry_base: float = Field(1.75, ge=1.0, le=4.0, description="DRY penalty growth per repeated token.")
    dry_allowed_length: int = Field(2, ge=1, le=20, description="Repeated sequences up to this length are not penalised by DRY.")
    seed: int | None = Field(None, description="Sampling seed; unset: random.")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings (the speakers' names are added automatically).")


class PerformerSettings(Settings):
    """How the Performer builds prompts and picks among candidates."""

    section: ClassVar[str] = "performer"

    candidates: int = Field(1, ge=1, le=16, description="Candidates sampled per reply; more than one enables reranking.")
    examples: int = Field(4, ge=0, le=32, description="Real exchanges of the character retrieved into the prompt.")
    history_turns: int = Field(12, ge=0, le=200, description="Most past turns kept in the prompt (older ones are trimmed first).")
    weight_style: float = Field(1.0, ge=0.0, le=10.0, description="Rerank weight of the style classifier's score.")
    weight_relevance: float = Field(0.6, ge=0.0, le=10.0, description="Rerank weight of similarity to the user's message.")
    relevance_floor: float = Field(0.1, ge=0.0, le=1.0, description="Rerank gate: a candidate's style counts only when its similarity to the message is at least this (and it is no echo); otherwise relevance decides (0: only echoes and replies pointing away from the message are gated). Checked against eval's coherence judge by benchmarks/relevance.py.")
    weight_repetition: float = Field(1.0, ge=0.0, le=10.0, description="Rerank penalty weight for repeating the history.")
    weight_length: float = Field(0.3, ge=0.0, le=10.0, description="Rerank penalty weight for straying from the character's usual line length.")
    post_history: Literal["system", "after_history"] = Field("system", description="Where the card's post-history instructions go: end of the system prompt (small models follow it best), or a system turn after the history (SillyTavern's way).")
    system_turn: Literal["auto", "card", "compact"] = Field("auto", description="The system turn: card (its system prompt, description, personality and scenario), compact (its system prompt and post-history instructions alone), or auto: what the served LoRA adapter was trained with (rolecast train --system-turn), else card.")
    max_message_chars: int = Field(8000, ge=1, le=1_000_000, description="Longer user messages are trimmed (with a notice).")
    retries: int = Field(2, ge=0, le=10, description="Resamples (new seed) when every candidate is empty after cleaning.")


class BackendSettings(Settings):
    """Which model runs, and where."""

    section: ClassVar[str] = "backend"

    backend: str = Field("llamacpp", description="Inference backend: llamacpp, transformers or openai.")
    model: str | None = Field(None, description="Model: a .gguf (llamacpp), an HF id or folder (transformers), a model name (openai). Default: the bundled SmolLM2-135M-Instruct.")
    adapter: str | None = Field(None, description="LoRA adapter: a GGUF LoRA (llamacpp) or PEFT folder (transformers). Default: the pack's own, when it has one.")
    base_url: str | None = Field(None, description="Base URL of an OpenAI-compatible server (openai backend).")
    backend_key: str | None = Field(None, description="API key of the OpenAI-compatible server (openai backend).", repr=False)
    n_ctx: int = Field(2048, ge=256, le=131072, description="Context window in tokens.")
    threads: int | None = Field(None, ge=1, le=512, description="CPU threads (llamacpp, and transformers on the CPU); default: all cores.")
    device: str = Field("auto", description="Device for transformers: auto, cpu or cuda.")
    no_adapter: bool = Field(False, description="Ignore the pack's LoRA adapter even when it has one.")


class EvalSettings(Settings):
    """What ``rolecast eval`` measures, and on how much."""

    section: ClassVar[str] = "eval"

    variants: list[str] = Field(["base", "prompt", "retrieval", "lora", "lora+rerank"], description="Variants to compare (comma-separated): base, prompt, retrieval, rerank, lora, lora+rerank, lora+card (the LoRA with the card's whole system turn).", json_schema_extra={"comma": True})
    limit: int = Field(200, ge=1, le=100_000, description="Test exchanges per variant: every judge and every pairwise comparison uses the same ones.", json_schema_extra={"cli": ["--limit", "--pairs"]})
    seed: int = Field(13, description="Seed for the sample of examples and for sampling replies.")
    bootstrap: int = Field(1000, ge=0, le=100_000, description="Bootstrap resamples for the confidence intervals (0: none).")
    probes: bool = Field(True, description="Also measure persona breaks on the probe set.")
    probe_limit: int = Field(47, ge=1, le=1000, description="Probe messages per variant.")
    scenes: int = Field(8, ge=0, le=1000, description="Held-out scenes replayed turn by turn per variant (drift, self-repetition, impersonation over scenes; 0: none).")
    knowledge: bool = Field(True, description="Also ask the knowledge probes mined from the pack (names, partners, places).")
    votes: str | None = Field(None, description="SQLite file of a 'rolecast serve --blind' run: its votes become win rates in the report.")
    resume: bool = Field(True, description="Reuse the variants a previous run with the same settings finished (kept in PACK/.eval-runs).")


class ServeSettings(Settings):
    """The HTTP server: API, web chat, limits."""

    section: ClassVar[str] = "serve"

    host: str = Field("127.0.0.1", description="Address to bind. Anything but loopback needs an API key.")
    port: int = Field(8000, ge=1, le=65535, description="Port to bind.")
    api_keys: list[str] = Field(default_factory=list, description="API key clients must send as 'Authorization: Bearer KEY' (repeatable; env ROLECAST_API_KEYS, comma-separated).", repr=False, json_schema_extra={"cli": "--api-key"})
    db: str = Field("rolecast.db", description="SQLite file for conversations.")
    workers: int = Field(1, ge=1, le=64, description="Generations run at once per model (llama.cpp: 1 per loaded model).")
    max_queue: int = Field(32, ge=0, le=10_000, description="Requests waiting per model before new ones get 429.")
    max_body_kb: int = Field(512, ge=1, le=100_000, description="Largest request body, in KiB (413 above).")
    rate_limit: int = Field(120, ge=0, le=1_000_000, description="Requests per minute per API key (0: no limit).")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (repeatable); none: CORS off.", json_schema_extra={"cli": "--cors-origin"})
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses of reverse proxies whose X-Forwarded-For is believed (repeatable; '*' for any), so that the web chat's rate limit counts each browser, not the proxy. None: the connecting address counts.", json_schema_extra={"cli": "--trusted-proxy"})
    web: bool = Field(True, description="Serve the web chat at /.")
    blind: bool = Field(False, description="Blind test in the web chat: some turns show two replies of different variants (names hidden) and ask which is better; votes go to the db ('rolecast eval PACK --votes DB' reads them).")
    blind_rate: float = Field(0.5, ge=0.0, le=1.0, description="Share of web chat turns that are blind A/B turns when --blind is on.")
    blind_variants: list[str] = Field(default_factory=list, description="Variants the blind test compares (comma-separated; default: every variant the pack can play: prompt, retrieval, rerank, and lora, lora+rerank with an adapter).", json_schema_extra={"comma": True})


class TelegramSettings(Settings):
    section: ClassVar[str] = "telegram"

    token: str | None = Field(None, description="Bot token from @BotFather (env ROLECAST_TOKEN).", repr=False)
    api_url: str | None = Field(None, description="A custom Bot API server, e.g. http://127.0.0.1:8081 (default: Telegram's).")
    edit_interval: float = Field(1.2, ge=0.1, le=60.0, description="Least seconds between edits of a streamed reply.")
    db: str = Field("rolecast.db", description="SQLite file for per-chat histories.")


class TrainSettings(Settings):
    """LoRA fine-tuning of the base model on a pack's examples (``rolecast train``)."""

    section: ClassVar[str] = "train"

    base: str | None = Field(None, description="Base model: an HF id (local cache only), a folder or a .gguf (dequantized); default: the bundled SmolLM2-135M-Instruct GGUF.")
    epochs: float = Field(1.0, gt=0.0, le=100.0, description="Passes over the training examples (unless --max-steps ends it first).")
    max_steps: int = Field(0, ge=0, le=10_000_000, description="Stop after this many optimizer steps, saving the adapter (0: no limit).")
    max_minutes: float = Field(0.0, ge=0.0, le=100_000.0, description="Stop after this many minutes of training, saving the adapter (0: no limit).")
    learning_rate: float = Field(2e-4, gt=0.0, le=1.0, description="Peak learning rate of the LoRA weights (cosine decay after a short warmup).")
    batch_size: int = Field(8, ge=1, le=1024, description="Examples per forward pass (packing: about as many tokens, in rows of --max-length).")
    grad_accum: int = Field(1, ge=1, le=1024, description="Forward passes accumulated per optimizer step.")
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: float = Field(32.0, gt=0.0, le=4096.0, description="LoRA alpha (the update is scaled by alpha / r).")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input (0: none, the fastest; early stopping guards against overfitting).")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], description="Linear layers that get a LoRA (repeatable); default: the attention and MLP projections.")
    max_length: int = Field(512, ge=32, le=131_072, description="Most tokens per example; the oldest context is cut to fit, never the reply.")
    data: Literal["scenes", "replies"] = Field("scenes", description="What a training row is: scenes (a stretch of a scene around the character, the loss on every one of their lines; the fastest per reply) or replies (one row per reply with its context).")
    system_turn: Literal["compact", "card"] = Field("compact", description="The system turn of every training row: compact (the card's system prompt and post-history instructions; the description, personality and scenario were half of House's scene tokens) or card (all of it). The pack records it, and a chat with the adapter sends the same (performer.system_turn auto).")
    max_context_turns: int = Field(4, ge=0, le=64, description="Lines of context before each reply (replies), or before the character speaks and of silence within a stretch (scenes).")
    max_eval_examples: int = Field(64, ge=0, le=1_000_000, description="Validation stretches used for the eval loss (a fixed sample; 0: no evaluation). Chandler: 64 stretches, 69 rows, about 37 s a pass on two cores.")
    eval_steps: int = Field(50, ge=1, le=1_000_000, description="Evaluate the validation loss every this many steps.")
    early_stopping_patience: int = Field(3, ge=0, le=1000, description="Stop after this many evaluations without a better validation loss, keeping the best (0: off).")
    save_steps: int = Field(50, ge=1, le=1_000_000, description="Save a resumable checkpoint every this many steps (a multiple of --eval-steps with early stopping).")
    save_total_limit: int = Field(2, ge=1, le=100, description="Checkpoints kept in PACK/train/checkpoints (the best one is always kept).")
    seed: int = Field(13, description="Seed for the LoRA initialisation, shuffling and dropout.")
    qlora: bool = Field(False, description="Load the base in 4 bits (bitsandbytes; needs a CUDA GPU and an HF base).")
    strategy: Literal["auto", "per_example", "padding_free", "packing", "group_by_length", "padded"] = Field("auto", description="How examples are batched: per_example (one at a time, gradients accumulated: no padding), padding_free (a batch flattened into one row), packing (TRL best-fit packing), group_by_length (padded, similar lengths together), padded (random batches padded to the longest); auto: the fastest measured for the device.")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="Mixed precision of the matrix products (the LoRA's weights stay fp32): bf16, or fp32 throughout; auto: bf16 where the processor computes it natively (CPUs with AVX512-BF16 or AMX: 1.8x the fp32 tokens/s on two cores, benchmarks/train.py; Ampere or later GPUs), fp16 on older GPUs, else fp32.")
    pad_to_multiple: int = Field(0, ge=0, le=4096, description="Pad each batch's length up to a multiple of this many tokens (1: no padding); 0 (auto): 64 on the CPU, where each of hundreds of distinct lengths would get its own bf16 matrix kernels (House: 1.23x the tokens/s, benchmarks/train.py), none on a GPU. The padding carries no loss.")
    mmap_threshold_mib: int = Field(4, ge=0, le=32, description="glibc: buffers above this many MiB are mapped and handed back to the system when freed, so that training's memory does not creep up over a run as glibc's heap keeps the freed activations of ever-different lengths (0: glibc's own sliding threshold; an environment's MALLOC_MMAP_THRESHOLD_ wins).")
    gradient_checkpointing: Literal["auto", "on", "off"] = Field("auto", description="Recompute activations in the backward pass to save memory; auto: on with CUDA, off on the CPU (faster).")
    resume: bool = Field(False, description="Continue the last run from its latest checkpoint in PACK/train/checkpoints.")
    dpo: bool = Field(False, description="Preference-tune the trained SFT adapter with TRL's DPO (rolecast train PACK --dpo; build --train --dpo: after SFT). Pairs: the real reply against the model's own off-topic sample and the character's line from another scene. At the defaults on the 135M base on a CPU: about 30 minutes and 15 GB of memory.")
    orpo: bool = Field(False, description="Like --dpo, with TRL's ORPO (no reference model).")
    preference_pairs: int = Field(256, ge=1, le=1_000_000, description="Train-split exchanges sampled for --dpo/--orpo (each gives up to two pairs).")
    preference_beta: float = Field(0.1, gt=0.0, le=10.0, description="DPO's beta (how far from the SFT model the tuning may go), ORPO's odds-ratio weight.")
    preference_max_minutes: float = Field(0.0, ge=0.0, le=100_000.0, description="Stop --dpo/--orpo after this many minutes, saving the tuned adapter (0: no limit). Its own budget: --max-minutes is SFT's alone.")
    preference_learning_rate: float = Field(2e-5, gt=0.0, le=1.0, description="Peak learning rate of --dpo/--orpo (lower than SFT's: it starts from a trained adapter).")


# ----------------------------------------------------------------------------- resolving


def validate(cls: type[Settings], data: dict[str, Any]) -> Settings:
    """``cls(**data)``, with pydantic's errors turned into one readable line."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_explain(cls, exc)) from None


def _explain(cls: type[Settings], exc: ValidationError) -> str:
    err = exc.errors()[0]
    name = ".".join(str(p) for p in err["loc"]) or cls.__name__
    if err["type"] == "extra_forbidden":
        valid = ", ".join(sorted(cls.model_fields))
        return f"unknown setting '{name}'; valid settings: {valid}"
    if err["type"] == "missing":
        return f"setting '{name}' is required ({_description(cls, name)})"
    return f"setting '{name}': {err['msg']} (got {err.get('input')!r})"


def _description(cls: type[Settings], name: str) -> str:
    field = cls.model_fields.get(name)
    return (field.description or "").rstrip(".") if field else ""


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """The config file as a dict of sections; {} when there is none."""
    path = path or os.environ.get(ENV_PREFIX + "CONFIG")
    if not path:
        path = Path("rolecast.toml")
        if not path.exists():
            return {}
    path = Path(path)
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"config file {path} not found", "pass an existing file to --config") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {path} is not valid TOML ({exc})") from None


def from_env(cls: type[Settings], env: typing.Mapping[str, str] | None = None) -> dict[str, Any]:
    """Values of ``cls``'s fields found in the environment (lists comma-separated).

    ``ROLECAST_<SECTION>__<FIELD>`` (pydantic-settings' nesting convention) sets one
    section's field; the flat ``ROLECAST_<FIELD>`` sets it in every section that has it —
    ``ROLECAST_SEED`` every seed, ``ROLECAST_DB`` the server's and the bot's database —
    and gives way to the sectioned one.
    """
    env = os.environ if env is None else env
    found: dict[str, Any] = {}
    for name in cls.model_fields:
        raw = env.get(f"{ENV_PREFIX}{cls.section.upper()}__{name.upper()}") if cls.section else None
        if raw is None:
            raw = env.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        found[name] = _split(raw) if _is_sequence(cls, name) else raw
    return found


def resolve(
    cls: type[Settings],
    cli: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    env: typing.Mapping[str, str] | None = None,
) -> Settings:
    """Layer default < config file section < environment < command line, and validate."""
    data: dict[str, Any] = {}
    section = (config or {}).get(cls.section, {})
    if not isinstance(section, dict):
        raise SettingsError(f"config section [{cls.section}] must be a table of settings")
    data.update(section)
    data.update(from_env(cls, env))
    data.update({k: v for k, v in (cli or {}).items() if v is not None and v != ()})
    return validate(cls, data)


def parse_assignment(cls: type[Settings], text: str) -> dict[str, Any]:
    """``"temperature=0.5"`` → ``{"temperature": "0.5"}``, refusing unknown names."""
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep:
        raise SettingsError(f"'{text}' is not NAME=VALUE", "e.g. temperature=0.5")
    if name not in cls.model_fields:
        valid = ", ".join(sorted(cls.model_fields))
        raise SettingsError(f"unknown setting '{name}'; valid settings: {valid}")
    value = value.strip()
    return {name: _split(value) if _is_sequence(cls, name) else (None if value in ("", "none", "null") else value)}


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _is_sequence(cls: type[Settings], name: str) -> bool:
    origin = typing.get_origin(_unwrap_optional(cls.model_fields[name].annotation))
    return origin in (list, tuple)


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


# ----------------------------------------------------------------------------- CLI options


def click_options(cls: type[Settings], exclude: tuple[str, ...] = ()):
    """A decorator adding one click option per field of ``cls``.

    Every option defaults to ``None`` so that :func:`resolve` can tell what the user
    actually typed from what the config file or environment should fill in.
    """
    import click

    def decorator(func):
        for name, field in reversed(list(cls.model_fields.items())):
            if name in exclude:
                continue
            func = click.option(*_option_decls(name, field), **_option_kwargs(cls, name, field))(func)
        return func

    return decorator


def _option_decls(name: str, field) -> list[str]:
    flags = (field.json_schema_extra or {}).get("cli") or "--" + name.replace("_", "-")
    flags = [flags] if isinstance(flags, str) else list(flags)  # several: aliases of one option
    if _unwrap_optional(field.annotation) is bool and not name.startswith("no_"):
        return [f"{flags[0]}/--no-{name.replace('_', '-')}", name]
    return [*flags, name]  # a negative switch (--no-adapter) is a plain flag: no --no-no-adapter


def _option_kwargs(cls: type[Settings], name: str, field) -> dict[str, Any]:
    import click

    annotation = _unwrap_optional(field.annotation)
    default = field.get_default(call_default_factory=True)
    shown = "" if default in (None, [], ()) else f" [default: {_show(default)}]"
    kwargs: dict[str, Any] = {"default": None, "help": (field.description or "") + shown}
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return {**kwargs, "is_flag": True, "default": None} if name.startswith("no_") else kwargs
    if origin is Literal:
        kwargs["type"] = click.Choice([str(a) for a in typing.get_args(annotation)])
    elif origin is list:
        kwargs["multiple"] = True
        if (field.json_schema_extra or {}).get("comma"):
            kwargs["callback"] = lambda ctx, param, value: [v for item in value for v in _split(item)] or None
    elif origin is tuple:
        kwargs["callback"] = lambda ctx, param, value: _split(value) if value else None
        kwargs["metavar"] = "A,B,C"
    elif annotation in (int, float):
        kwargs["type"] = annotation
    return kwargs


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
