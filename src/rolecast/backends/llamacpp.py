"""The llama.cpp backend (the CPU default): GGUF models through llama-cpp-python.

    backend = LlamaCppBackend(BackendSettings())                  # the bundled SmolLM2-135M-Instruct
    backend = LlamaCppBackend(BackendSettings(model="x.gguf"), adapter="pack/adapter.gguf")

It drives llama.cpp's own decode loop and sampler chains (penalties, DRY, top-k/p,
min-p, temperature) rather than ``Llama.create_completion``, for two reasons:
several candidates are decoded as parallel sequences of one batch over a shared
prompt (best-of-n costs far less than n replies), and the KV cache of the previous
turn is reused, so a new turn evaluates only the new tokens.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import MessageError, ModelError, require
from ..models.base_model import check_lora, cpu_has_amx, gguf_path
from ..models.templates import ChatTemplate
from ..settings import BackendSettings, GenerationSettings
from .base import DRY_BREAKERS, Backend, Completion, Message, StopScanner

log = logging.getLogger(__name__)

MAX_SEQUENCES = 16  # the most candidates decoded side by side


def guard_amx() -> None:
    """On AMX processors, make llama-cpp-python's default model parameters skip llama.cpp's extra buffer types,
    for code that loads models through ``llama_cpp.Llama`` (llama_cpp.server, the tests' references, benchmarks);
    see ``LlamaCppBackend._load_model`` for why. Does nothing elsewhere, and once."""
    import llama_cpp
    import llama_cpp.llama_cpp as lib

    if not cpu_has_amx() or getattr(lib.llama_model_default_params, "guarded", False):
        return
    default = lib.llama_model_default_params

    def model_params():
        params = default()
        params.use_extra_bufts = False
        return params

    model_params.guarded = True
    lib.llama_model_default_params = llama_cpp.llama_model_default_params = model_params


class LlamaCppBackend(Backend):
    name = "llamacpp"

    def __init__(self, settings: BackendSettings, adapter: str | None = None):
        super().__init__(settings, adapter)
        self.lib = require("llama_cpp", "chat")
        from llama_cpp import _internals

        self._internals = _internals
        self.path = gguf_path(settings.model)
        self._silence_llama_log()
        threads = settings.threads or max(1, os.cpu_count() or 1)
        self.model = self._load_model(str(self.path))
        self.ctx = self._load_context(settings.n_ctx, threads)
        self.batch = _internals.LlamaBatch(n_tokens=512, embd=0, n_seq_max=MAX_SEQUENCES, verbose=False)
        self.vocab = self.model.vocab
        if adapter:
            self._apply_adapter(Path(adapter))
        meta = self.model.metadata()
        self.template = ChatTemplate(meta.get("tokenizer.chat_template"), bos=self._piece(self.model.token_bos()),
                                     eos=self._piece(self.model.token_eos()), name=self.path.name)
        self._cached: list[int] = []  # tokens whose KV is in sequence 0
        self._buf = ctypes.create_string_buffer(256)
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------
    def _silence_llama_log(self) -> None:
        from llama_cpp import _logger

        _logger.set_verbose(log.isEnabledFor(logging.DEBUG))

    def _load_model(self, path: str):
        params = self.lib.llama_model_default_params()
        # On AMX processors llama.cpp (llama-cpp-python 0.3.36) moves quantized weights into AMX buffers, and
        # decoding the bundled Q4_1 SmolLM2 from them segfaults (a Xeon with AMX-INT8, measured); plain CPU
        # buffers decode it at full speed, so the extra buffer types stay off there.
        if cpu_has_amx():
            params.use_extra_bufts = False
        try:
            return self._internals.LlamaModel(path_model=path, params=params, verbose=False)
        except ValueError:
            raise ModelError(f"llama.cpp could not load {path}: corrupt, truncated or of an unsupported architecture",
                             "re-download it, or try --backend transformers") from None

    def _load_context(self, n_ctx: int, threads: int):
        params = self.lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = 512
        params.n_seq_max = MAX_SEQUENCES
        params.kv_unified = True  # one KV buffer: candidates share the prompt's cells
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        try:
            return self._internals.LlamaContext(model=self.model, params=params, verbose=False)
        except ValueError:
            raise ModelError(f"llama.cpp could not create a context of {n_ctx} tokens", "try a smaller --n-ctx") from None

    def _apply_adapter(self, path: Path) -> None:
        check_lora(path, self.path)
        adapter = self.lib.llama_adapter_lora_init(self.model.model, str(path).encode())
        if adapter is None:
            raise ModelError(f"llama.cpp could not load the LoRA adapter {path}", "re-export it with: rolecast export PACK")
        self._adapter = adapter
        adapters = (self.lib.llama_adapter_lora_p_ctypes * 1)(adapter)
        scales = (ctypes.c_float * 1)(1.0)
        if self.lib.llama_set_adapters_lora(self.ctx.ctx, adapters, 1, scales):
            raise ModelError(f"the LoRA adapter {path} does not fit the model {self.path}", "train and export it on this base model")

    # -- tokens ----------------------------------------------------------------
    def _piece(self, token: int) -> str:
        return self.model.token_to_piece(token, special=True).rstrip(b"\0").decode("utf-8", "replace")

    def prompt_tokens(self, messages: list[Message]) -> list[int]:
        add_bos = self.model.add_bos_token()
        prompt = self.template.render(messages, generation=True, drop_bos=add_bos)  # BOS once, not twice
        return self.model.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.prompt_tokens(messages))

    @property
    def model_name(self) -> str:
        return self.path.stem

    # -- generation ------------------------------------------------------------
    def complete(self, messages: list[Message], settings: GenerationSettings, n: int = 1,
                 cancel: threading.Event | None = None) -> list[Completion]:
        prompt = self.prompt_tokens(messages)
        n = self.sequences_that_fit(len(prompt), max(1, min(n, MAX_SEQUENCES)), settings.max_tokens)
        texts = [bytearray() for _ in range(n)]
        counts = [0] * n
        reasons = ["length"] * n
        scanners = [StopScanner(settings.stop) for _ in range(n)]
        finished: set[int] = set()
        with self._lock, contextlib.closing(self._decode(prompt, settings, n, finished)) as decoded:
            for seq, token, eog in decoded:
                if cancel is not None and cancel.is_set():  # the client left: stop decoding every sequence
                    reasons = ["cancelled" if i not in finished else r for i, r in enumerate(reasons)]
                    break
                if eog:
                    reasons[seq] = "stop"
                    finished.add(seq)
                    continue
                texts[seq] += self._bytes(token)
                counts[seq] += 1
                if scanners[seq].hit(texts[seq].decode("utf-8", "ignore")):
                    reasons[seq] = "stop"
                    finished.add(seq)
        return [Completion(scanners[i].cut(texts[i].decode("utf-8", "replace")), counts[i], reasons[i]) for i in range(n)]

    def stream(self, messages: list[Message], settings: GenerationSettings) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        scanner = StopScanner(settings.stop)
        with self._lock:
            for _, token, eog in self._decode(self.prompt_tokens(messages), settings, 1, set()):
                if eog:
                    break
                piece = scanner.feed(decoder.decode(self._bytes(token)))
                if piece:
                    yield piece
                if scanner.stopped:
                    return
            tail = scanner.flush(decoder.decode(b"", final=True))
            if tail:
                yield tail

    def sequences_that_fit(self, prompt_tokens: int, n: int, max_tokens: int) -> int:
        """How many of ``n`` candidates can each get ``max_tokens`` beside the prompt.

        The candidates share the prompt's KV cells but each new token takes a cell per
        sequence: n replies of max_tokens need n * max_tokens cells after the prompt. A long
        prompt gets fewer candidates (at least one, which the prompt fitting guarantees room for).
        """
        room = self.ctx.n_ctx() - prompt_tokens - 1
        fits = max(1, min(n, room // max(1, max_tokens)))
        if fits < n:
            log.info("decoding %d of %d candidates: a %d-token prompt leaves room for %d tokens of %d", fits, n,
                     prompt_tokens, room, n * max_tokens)
        return fits

    def _decode_batch(self) -> None:
        """llama_decode, its failure (no KV cells left, a backend error) as a typed error."""
        try:
            self.ctx.decode(self.batch)
        except RuntimeError as exc:
            self.ctx.kv_cache_seq_rm(-1, -1, -1)  # the cache is in an unknown state: start clean next time
            self._cached = []
            raise ModelError(f"llama.cpp could not decode ({exc}; context of {self.ctx.n_ctx()} tokens)",
                             "shorten the message, ask for fewer candidates or raise --n-ctx") from None

    def _bytes(self, token: int) -> bytes:
        n = self.lib.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, False)
        return self._buf.raw[:n] if n > 0 else b""

    def _decode(self, prompt: list[int], gen: GenerationSettings, n: int, finished: set[int]) -> Iterator[tuple[int, int, bool]]:
        """Yield (sequence, token, end-of-generation) as the n sequences are decoded side by side.

        The caller adds a sequence to ``finished`` to stop decoding it (a stop string).
        """
        n_ctx = self.ctx.n_ctx()
        if len(prompt) >= n_ctx:
            raise MessageError(f"the prompt takes {len(prompt)} tokens, more than the context of {n_ctx}",
                               "shorten the message or raise --n-ctx")
        self._eval_prompt(prompt)
        samplers = [self._sampler(gen, i) for i in range(n)]
        for i in range(1, n):
            self.ctx.kv_cache_seq_cp(0, i, -1, -1)
        pos = len(prompt)
        live = list(range(n))
        logits_idx = {i: -1 for i in range(n)}
        try:
            for _ in range(gen.max_tokens):
                tokens = {}
                for seq in live:
                    token = samplers[seq].sample(self.ctx, logits_idx[seq])
                    eog = self.lib.llama_vocab_is_eog(self.vocab, token)
                    yield seq, token, eog
                    if not eog and seq not in finished:
                        tokens[seq] = token
                live = list(tokens)
                if not live or pos >= n_ctx - 1:
                    break
                self._eval_step(tokens, pos)
                if 0 in tokens:
                    self._cached.append(tokens[0])
                logits_idx = {seq: i for i, seq in enumerate(live)}
                pos += 1
        finally:
            for i in range(1, n):
                self.ctx.kv_cache_seq_rm(i, -1, -1)
            for sampler in samplers:
                sampler.close()

    def _eval_prompt(self, prompt: list[int]) -> None:
        """Evaluate what the KV cache lacks of ``prompt`` (it keeps the previous turn's tokens)."""
        keep = self._common_prefix(prompt[:-1])
        self.ctx.kv_cache_seq_rm(0, keep, -1)
        self._cached = self._cached[:keep]
        for start in range(keep, len(prompt), 512):
            chunk = prompt[start:start + 512]
            self.batch.set_batch(chunk, n_past=start, logits_all=False)
            self._decode_batch()
            self._cached.extend(chunk)

    def score_reply(self, messages: list[Message], reply: str) -> tuple[float, int]:
        """Log-probability of ``reply`` (and the end of the turn) as the assistant's answer, and its token count."""
        import numpy as np

        prompt = self.prompt_tokens(messages)
        target = self.model.tokenize(reply.encode("utf-8"), add_bos=False, special=False) + [self.model.token_eos()]
        tokens = prompt + target
        if len(tokens) > self.ctx.n_ctx():
            raise MessageError(f"prompt and reply take {len(tokens)} tokens, more than the context of {self.ctx.n_ctx()}",
                               "raise --n-ctx")
        first = len(prompt) - 1  # the position whose logits predict the reply's first token
        total = 0.0
        with self._lock:
            keep = self._common_prefix(tokens[:first])
            self.ctx.kv_cache_seq_rm(0, keep, -1)
            self._cached = tokens[:keep]
            for start in range(keep, len(tokens) - 1, 512):
                chunk = tokens[start:min(start + 512, len(tokens) - 1)]
                batch = self.batch.batch
                batch.n_tokens = len(chunk)
                for i, token in enumerate(chunk):
                    batch.token[i], batch.pos[i], batch.seq_id[i][0], batch.n_seq_id[i] = token, start + i, 0, 1
                    batch.logits[i] = start + i >= first
                self._decode_batch()
                self._cached.extend(chunk)
                n_vocab = self.lib.llama_vocab_n_tokens(self.vocab)
                for i in range(len(chunk)):
                    pos = start + i
                    if pos < first:
                        continue
                    row = np.ctypeslib.as_array(self.ctx.get_logits_ith(i), shape=(n_vocab,)).astype(np.float64)
                    top = row.max()
                    total += row[tokens[pos + 1]] - top - np.log(np.exp(row - top).sum())
        return float(total), len(target)

    def _common_prefix(self, tokens: list[int]) -> int:
        keep = 0
        for a, b in zip(self._cached, tokens):
            if a != b:
                break
            keep += 1
        return keep

    def _eval_step(self, tokens: dict[int, int], pos: int) -> None:
        batch = self.batch.batch
        batch.n_tokens = len(tokens)
        for i, (seq, token) in enumerate(tokens.items()):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.seq_id[i][0] = seq
            batch.n_seq_id[i] = 1
            batch.logits[i] = True
        self._decode_batch()

    def _sampler(self, gen: GenerationSettings, i: int):
        sampler = self._internals.LlamaSampler()
        sampler.add_penalties(n_vocab=0, penalty_last_n=64, penalty_repeat=gen.repeat_penalty,
                              penalty_freq=gen.frequency_penalty, penalty_present=gen.presence_penalty)
        if gen.dry_multiplier > 0:
            # The window must be positive: llama.cpp clamps -1 ("whole context") to 0, which turns DRY off.
            sampler.add_dry(self.model, gen.dry_multiplier, gen.dry_base, gen.dry_allowed_length, self.ctx.n_ctx(),
                            DRY_BREAKERS)
        if gen.temperature <= 0:
            sampler.add_greedy()
            return sampler
        if gen.top_k:
            sampler.add_top_k(gen.top_k)
        sampler.add_top_p(gen.top_p, 1)
        sampler.add_min_p(gen.min_p, 1)
        sampler.add_temp(gen.temperature)
        seed = gen.seed if gen.seed is not None else random.getrandbits(31)
        sampler.add_dist((seed + 7919 * i) & 0x7FFFFFFF)
        return sampler

    def close(self) -> None:
        for name in ("batch", "ctx", "model"):
            obj = self.__dict__.pop(name, None)
            if obj is not None:
                obj.close()
