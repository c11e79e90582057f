"""The transformers backend: Hugging Face models, with an optional PEFT LoRA, on GPU or CPU.

    backend = TransformersBackend(BackendSettings(backend="transformers"))      # the bundled GGUF, dequantized
    backend = TransformersBackend(BackendSettings(model="HuggingFaceTB/SmolLM2-360M-Instruct", device="cuda"),
                                  adapter="pack/adapter")                       # a PEFT folder
    backend.complete([{"role": "user", "content": "Hi"}], GenerationSettings(), n=3)

``settings.model`` is a local folder, a ``.gguf`` file (read by transformers' GGUF
loader, which dequantizes it to fp32; needs the ``gguf`` package) or a hub id that
is already in the local cache: nothing is downloaded unless the user sets
``HF_HUB_OFFLINE=0``. Without a model, the GGUF bundled for the llamacpp backend is used.

Sampling follows the llamacpp backend so that both behave alike: llama.cpp's
penalties (repeat, frequency, presence over the last 64 generated tokens) and DRY
are logits processors here (:class:`PenaltyProcessor`, :class:`DryProcessor`; this
transformers has no DRY), then transformers' own temperature, top-k, top-p and
min-p. The n candidates of :meth:`complete` are the rows of one batched
``generate`` call; :meth:`stream` runs ``generate`` in a thread and stops it when
the iterator is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import MessageError, ModelError, SettingsError, first_line, require
from ..models.base_model import default_model_path, from_pretrained, resolve_model
from ..models.templates import ChatTemplate
from ..settings import BackendSettings, GenerationSettings
from .base import DRY_BREAKERS, Backend, Completion, Message, StopScanner

PENALTY_LAST_N = 64  # the llamacpp backend's penalty window
DRY_MAX_MATCH = 50  # longer repeats add nothing (and base**n would overflow)
#: End-of-turn tokens of common chat templates; a config whose eos is <|endoftext|> would otherwise run on.
TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


# ----------------------------------------------------------------------------- sampling


class PenaltyProcessor:
    """llama.cpp's penalties sampler: each token among the last ``last_n`` generated ones has its
    logit divided (positive) or multiplied (negative) by ``repeat``, then lowered by
    ``frequency`` × its count and by ``presence`` once. Tokens before ``start`` (the prompt) are
    not counted, as in the llamacpp backend, whose sampler only sees what it sampled."""

    def __init__(self, start: int, repeat: float, frequency: float, presence: float, last_n: int = PENALTY_LAST_N):
        self.start, self.repeat, self.frequency, self.presence, self.last_n = start, repeat, frequency, presence, last_n

    def __call__(self, input_ids, scores):
        window = input_ids[:, max(self.start, input_ids.shape[1] - self.last_n):]
        if window.shape[1] == 0:
            return scores
        counts = scores.new_zeros(scores.shape).scatter_add_(1, window, scores.new_ones(window.shape))
        seen = counts > 0
        penalised = (scores / self.repeat).where(scores > 0, scores * self.repeat)
        return penalised.where(seen, scores) - counts * self.frequency - seen.to(scores.dtype) * self.presence


def dry_penalties(tokens: list[int], multiplier: float, base: float, allowed_length: int,
                  breakers: frozenset[int]) -> dict[int, float]:
    """DRY ("Don't Repeat Yourself"): the penalty for each token that would extend a repeat.

    If the text's last n tokens also occur earlier, followed by token t, then choosing t
    continues the repeat: when n ≥ ``allowed_length`` it costs ``multiplier * base**(n -
    allowed_length)``. A match never extends across a sequence breaker (so repeating a name
    after each newline is free), nothing is penalised right after a breaker, and a breaker is
    never the penalised token.
    """
    if len(tokens) < 2 or tokens[-1] in breakers:
        return {}
    last, longest = tokens[-1], {}
    for i in range(len(tokens) - 1):
        if tokens[i] != last or tokens[i + 1] in breakers:
            continue
        n = 1
        while n < DRY_MAX_MATCH and n <= i and tokens[i - n] == tokens[-1 - n] and tokens[-1 - n] not in breakers:
            n += 1
        longest[tokens[i + 1]] = max(n, longest.get(tokens[i + 1], 0))
    return {t: multiplier * base ** (n - allowed_length) for t, n in longest.items() if n >= allowed_length}


class DryProcessor:
    """:func:`dry_penalties` as a logits processor, over the tokens generated after ``start``
    (the llamacpp backend's DRY also sees only generated tokens)."""

    def __init__(self, start: int, multiplier: float, base: float, allowed_length: int, breakers: frozenset[int]):
        self.start, self.multiplier, self.base, self.allowed, self.breakers = start, multiplier, base, allowed_length, breakers

    def __call__(self, input_ids, scores):
        for row, tokens in enumerate(input_ids[:, self.start:].tolist()):
            for token, penalty in dry_penalties(tokens, self.multiplier, self.base, self.allowed, self.breakers).items():
                scores[row, token] -= penalty
        return scores


class StopCriteria:
    """Ends each row of a batch once its text holds a stop string, and every row once ``cancel`` is set."""

    def __init__(self, tokenizer, start: int, stops: list[str], cancel: threading.Event | None = None):
        self.tokenizer, self.start, self.cancel = tokenizer, start, cancel
        self.scanner = StopScanner(stops)
        # A byte-level token holds at least one byte, so a stop string spans at most 4 tokens per character.
        self.window = 4 * self.scanner.longest + 4

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.cancel is not None and self.cancel.is_set():
            return ~done
        if self.scanner.stops:
            tails = input_ids[:, max(self.start, input_ids.shape[1] - self.window):]
            for row, text in enumerate(self.tokenizer.batch_decode(tails, skip_special_tokens=True)):
                done[row] = self.scanner.cut(text) != text  # anywhere in the tail: the last token may be long
        return done


# ----------------------------------------------------------------------------- loading


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, settings: BackendSettings, adapter: str | None = None):
        super().__init__(settings, adapter)
        self.torch = require("torch", "chat")
        self.transformers = require("transformers", "train")
        self.device, self.dtype = self._device(settings.device)
        if settings.threads and self.device.type == "cpu":
            self.torch.set_num_threads(settings.threads)
        self.source, kwargs = resolve_model(settings.model)
        if "gguf_file" in kwargs:
            require("gguf", "train")
        self.tokenizer, self.model = self._load(self.source, kwargs)
        if adapter:
            self._apply_adapter(adapter)
        self.template = ChatTemplate.of_tokenizer(self.tokenizer, name=self.source)
        self.eos_ids = self._eos_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self._breakers: frozenset[int] | None = None
        self._lock = threading.Lock()

    def _device(self, name: str):
        cuda = self.torch.cuda.is_available()
        try:
            device = self.torch.device(("cuda" if cuda else "cpu") if name == "auto" else name)
        except RuntimeError:
            raise SettingsError(f"unknown device '{name}'", "use --device auto, cpu or cuda") from None
        if device.type == "cuda" and not cuda:
            raise SettingsError("--device cuda, but CUDA is not available here", "use --device auto or cpu")
        # bf16 halves memory on GPUs at no quality cost; CPUs are fastest (and exact) in fp32.
        return device, self.torch.bfloat16 if device.type == "cuda" else self.torch.float32

    def _load(self, source: str, kwargs: dict):
        auto = self.transformers
        tokenizer = from_pretrained(auto.AutoTokenizer, source, kwargs, "model")
        model = from_pretrained(auto.AutoModelForCausalLM, source, {**kwargs, "dtype": self.dtype}, "model")
        return tokenizer, model.to(self.device).eval()

    def _apply_adapter(self, adapter: str) -> None:
        peft = require("peft", "train")
        if not Path(adapter, "adapter_config.json").is_file():
            raise ModelError(f"{adapter} is not a PEFT LoRA folder (no adapter_config.json)",
                             "pass the folder `rolecast train` wrote, or --no-adapter")
        try:
            model = peft.PeftModel.from_pretrained(self.model, adapter)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"the LoRA adapter {adapter} does not fit the model {self.source} ({first_line(exc)})",
                             "train it on this base model") from None
        # Merged weights run at the base model's speed; one backend serves one adapter.
        self.model = model.merge_and_unload().eval()

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids]) | {self.tokenizer.eos_token_id}
        vocab = self.tokenizer.get_vocab()
        return sorted(i for i in ids | {vocab.get(t) for t in TURN_ENDS} if i is not None)

    # -- tokens ----------------------------------------------------------------
    def prompt_tokens(self, messages: list[Message]) -> list[int]:
        return self.template.tokens(self.tokenizer, messages, generation=True)

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.prompt_tokens(messages))

    @property
    def n_ctx(self) -> int:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        return min(self.settings.n_ctx, limit) if limit else self.settings.n_ctx

    @property
    def model_name(self) -> str:
        if not self.settings.model:
            return default_model_path().stem
        path = Path(self.settings.model).expanduser()
        return path.stem if path.exists() else self.settings.model  # a file or folder, else a hub id

    def breakers(self) -> frozenset[int]:
        """Tokens whose text holds a DRY sequence breaker (llama.cpp's rule), found once."""
        if self._breakers is None:
            texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
            self._breakers = frozenset(i for i, text in enumerate(texts) if any(b in text for b in DRY_BREAKERS))
        return self._breakers

    # -- generation ------------------------------------------------------------
    def complete(self, messages: list[Message], settings: GenerationSettings, n: int = 1,
                 cancel: threading.Event | None = None) -> list[Completion]:
        prompt, n = self._checked_prompt(messages), max(1, n)
        stop = StopCriteria(self.tokenizer, len(prompt), settings.stop, cancel)
        sample = settings.temperature > 0
        with self._lock:
            rows = self._generate(prompt, settings, n if sample else 1, stop).tolist()
        # Greedy decoding has one answer (and generate() refuses n > 1): copies, as the llamacpp backend returns.
        return [self._completion(row[len(prompt):], stop.scanner) for row in (rows if sample else rows * n)]

    def _completion(self, ids: list[int], scanner: StopScanner) -> Completion:
        end = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
        ids = ids[:end] if end is not None else ids
        while ids and ids[-1] == self.pad_id:  # rows stopped early are padded to the longest
            ids.pop()
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = scanner.cut(text)
        reason = "stop" if end is not None or cut != text else "length"
        return Completion(cut, len(ids), reason)

    def stream(self, messages: list[Message], settings: GenerationSettings) -> Iterator[str]:
        prompt = self._checked_prompt(messages)
        cancel = threading.Event()
        streamer = self.transformers.TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        criteria = StopCriteria(self.tokenizer, len(prompt), settings.stop, cancel)
        failure: list[BaseException] = []

        def run():
            try:
                self._generate(prompt, settings, 1, criteria, streamer)
            except BaseException as exc:  # handed to the consumer below
                failure.append(exc)
                streamer.end()

        scanner = StopScanner(settings.stop)
        with self._lock:
            thread = threading.Thread(target=run, name="rolecast-generate", daemon=True)
            thread.start()
            try:
                for piece in streamer:
                    text = scanner.feed(piece)
                    if text:
                        yield text
                    if scanner.stopped:
                        return
                if failure:
                    raise failure[0]
                tail = scanner.flush()
                if tail:
                    yield tail
            finally:
                cancel.set()  # an early close ends generate() at its next step
                thread.join()

    def _checked_prompt(self, messages: list[Message]) -> list[int]:
        prompt = self.prompt_tokens(messages)
        if len(prompt) >= self.n_ctx:
            raise MessageError(f"the prompt takes {len(prompt)} tokens, more than the context of {self.n_ctx}",
                               "shorten the message or raise --n-ctx")
        return prompt

    def _generate(self, prompt: list[int], gen: GenerationSettings, n: int, stop: StopCriteria, streamer=None):
        torch = self.torch
        if gen.seed is not None:
            torch.manual_seed(gen.seed)
        ids = torch.tensor([prompt], device=self.device)
        with torch.inference_mode():
            return self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=self._config(gen, n, len(prompt)),
                logits_processor=self.transformers.LogitsProcessorList(self._processors(gen, len(prompt))),
                stopping_criteria=self.transformers.StoppingCriteriaList([stop]), streamer=streamer)

    def _config(self, gen: GenerationSettings, n: int, prompt_len: int):
        # Every sampling field is set: generate() fills unset ones from the model's own defaults.
        sample = gen.temperature > 0
        return self.transformers.GenerationConfig(
            max_new_tokens=max(1, min(gen.max_tokens, self.n_ctx - prompt_len)), num_return_sequences=n,
            do_sample=sample, temperature=gen.temperature if sample else 1.0, top_p=gen.top_p if sample else 1.0,
            top_k=gen.top_k if sample else 50, min_p=gen.min_p if sample and gen.min_p > 0 else None,
            repetition_penalty=1.0, no_repeat_ngram_size=0,
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id)

    def _processors(self, gen: GenerationSettings, start: int) -> list:
        processors = []
        if gen.repeat_penalty != 1.0 or gen.frequency_penalty or gen.presence_penalty:
            processors.append(PenaltyProcessor(start, gen.repeat_penalty, gen.frequency_penalty, gen.presence_penalty))
        if gen.dry_multiplier > 0:
            processors.append(DryProcessor(start, gen.dry_multiplier, gen.dry_base, gen.dry_allowed_length, self.breakers()))
        return processors

    def close(self) -> None:
        if self.__dict__.pop("model", None) is not None and self.device.type == "cuda":
            self.torch.cuda.empty_cache()
