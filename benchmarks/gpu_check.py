"""The accelerator checks in one script: CUDA training (bf16, QLoRA) against the CPU, and vLLM serving the packs' LoRA.

    make gpu-check                       # or: .venv/bin/python benchmarks/gpu_check.py [--steps 20]

On a machine without CUDA it says so and exits 0: nothing is checked and nothing is claimed.
With CUDA, on the sample pack (Maggie), each check runs or is reported as skipped with the
reason, and the script exits 1 if any check that ran failed:

1. CPU reference: ``rolecast train`` for ``--steps`` steps with CUDA hidden (same seed, data, LoRA).
2. CUDA bf16: the same run on the GPU; its validation loss within 0.05 of the CPU's.
3. two GPUs (where there are): ``accelerate launch --multi_gpu --num_processes 2`` with half the batch
   per process; the loss within 0.1 of the CPU's.
4. QLoRA: the same on a 4-bit base (needs ``bitsandbytes``); the loss within 0.1 of the CPU's.
5. vLLM: serves the base as an HF folder (the bundled GGUF dequantized) with the pack's LoRA
   (``rolecast compose`` computes the same arguments), ``rolecast say --backend openai`` answers
   through it, then ``benchmarks/serve.py``'s load test runs against rolecast over it (needs ``vllm``).
6. A named base (``--base``, default qwen2.5-1.5b; ``rolecast models`` lists them): a bf16 LoRA on its
   Hugging Face model, the same with ``--qlora``, ``rolecast export``, then ``rolecast say`` on its
   official GGUF with that LoRA in llama.cpp, and vLLM serving the model with the LoRA. Each needs the
   model in the Hugging Face cache (``huggingface-cli download REPO`` and ``rolecast models pull NAME``
   where the hub is reachable); without it the step is skipped and says what to fetch.

It installs nothing by itself (the device machines have no internet): install ``bitsandbytes``
and ``vllm`` first where you can. Every step's command and output are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample" / "harbor_lights.txt"
ROLECAST = [sys.executable, "-m", "rolecast.cli"]


def run(cmd: list[str], env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    print("$", " ".join(map(str, cmd)), flush=True)
    done = subprocess.run(list(map(str, cmd)), env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    print((done.stdout + done.stderr)[-3000:], flush=True)
    return done


def eval_loss(pack: Path) -> float | None:
    metrics = pack / "train" / "metrics.json"
    return json.loads(metrics.read_text()).get("eval_loss") if metrics.exists() else None


def train(pack: Path, steps: int, env: dict | None = None, extra: tuple[str, ...] = ()) -> float | None:
    done = run([*ROLECAST, "train", pack, "--max-steps", steps, "--batch-size", 2, "--eval-steps", steps,
                "--save-steps", steps, "--max-eval-examples", 16, "--early-stopping-patience", 0, "--no-progress", *extra],
               env)
    return eval_loss(pack) if done.returncode == 0 else None


def dequantized_base(folder: Path) -> Path:
    """The bundled GGUF as an HF folder: what vLLM and bitsandbytes load."""
    from rolecast.models.base_model import load_model, load_tokenizer, resolve_base

    source, kwargs, _ = resolve_base(None)
    load_model(source, kwargs, "cpu", False).save_pretrained(folder)
    load_tokenizer(source, kwargs).save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_vllm(pack: Path, base: Path | str, results: dict, label: str = "vllm") -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", base, "--port",
                               str(port), "--enable-lora", "--max-lora-rank", "16", "--lora-modules",
                               f"maggie={pack / 'adapter'}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(300):
            if server.poll() is not None:
                break
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        time.sleep(5)
        said = run([*ROLECAST, "say", pack, "Rough night?", "--backend", "openai", "--base-url", url, "--json"])
        results[f"{label}: rolecast say through the LoRA"] = "passed" if said.returncode == 0 else "FAILED"
        bench = run([sys.executable, ROOT / "benchmarks" / "serve.py", "--pack", pack, "--seconds", 20, "--clients", "1,8"],
                    {"ROLECAST_BACKEND": "openai", "ROLECAST_BASE_URL": url})
        results[f"{label}: serve benchmark"] = "passed" if bench.returncode == 0 else "FAILED"
    finally:
        server.terminate()
        try:
            print(server.communicate(timeout=30)[0][-2000:])
        except subprocess.TimeoutExpired:
            server.kill()


def cached(repo: str) -> bool:
    """Whether the Hugging Face model ``repo`` is in the local cache (the device machines have no internet)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo, local_files_only=True)
        return True
    except Exception:  # the hub's LocalEntryNotFoundError, or a cache it cannot read
        return False


def check_named_base(name: str, sample: Path, work: Path, steps: int, results: dict) -> None:
    """Train a named base's HF model (bf16, QLoRA), export, serve its official GGUF with the LoRA, and vLLM."""
    import importlib.util

    from rolecast.errors import ModelError
    from rolecast.models.bases import local_file, named

    base = named(name)
    if base is None:
        results[f"named base {name}"] = "FAILED: not a named base (rolecast models lists them)"
        return
    if not cached(base.hf_repo):
        results[f"named base {name}"] = f"skipped: {base.hf_repo} is not in the Hugging Face cache (huggingface-cli download {base.hf_repo})"
        return
    pack = work / f"named-{name}"
    shutil.copytree(sample, pack)
    loss = train(pack, steps, None, ("--base", base.hf_repo))
    results[f"{name}: bf16 LoRA"] = ("passed" if loss is not None else "FAILED") + f" (validation loss {loss})"
    if importlib.util.find_spec("bitsandbytes"):
        qlora = work / f"named-{name}-qlora"
        shutil.copytree(sample, qlora)
        q = train(qlora, steps, None, ("--base", base.hf_repo, "--qlora"))
        results[f"{name}: QLoRA"] = ("passed" if q is not None and loss is not None and abs(q - loss) <= 0.15
                                     else "FAILED") + f" (validation loss {q})"
    else:
        results[f"{name}: QLoRA"] = "skipped: bitsandbytes is not installed"
    if loss is None:
        return
    exported = run([*ROLECAST, "export", pack])
    results[f"{name}: export"] = "passed" if exported.returncode == 0 else "FAILED"
    try:
        gguf = local_file(base)
    except ModelError:
        results[f"{name}: llama.cpp on the official GGUF"] = f"skipped: not pulled (rolecast models pull {name})"
    else:
        said = run([*ROLECAST, "say", pack, "Rough night?", "--model", gguf, "--json"])
        results[f"{name}: llama.cpp on the official GGUF"] = "passed" if said.returncode == 0 else "FAILED"
    if importlib.util.find_spec("vllm"):
        check_vllm(pack, base.hf_repo, results, label=name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--base", default="qwen2.5-1.5b", help="the named base to check (rolecast models)")
    args = parser.parse_args()
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing was checked.")
        return 0
    print(f"gpu-check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    results: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="rolecast-gpu-"))
    try:
        sample = work / "sample"
        prep = run([*ROLECAST, "prepare", SAMPLE, "--character", "Maggie", "--show", "Harbor Lights", "--out", sample])
        if prep.returncode:
            print("gpu-check: could not prepare the sample pack")
            return 1
        losses = {}
        for name, env, extra in (("cpu", {"CUDA_VISIBLE_DEVICES": ""}, ()), ("cuda bf16", {}, ())):
            pack = work / name.replace(" ", "-")
            shutil.copytree(sample, pack)
            losses[name] = train(pack, args.steps, env, extra)
        cpu, gpu = losses["cpu"], losses["cuda bf16"]
        results["cuda bf16 training"] = ("passed" if cpu is not None and gpu is not None and abs(cpu - gpu) <= 0.05
                                         else "FAILED") + f" (validation loss cpu {cpu}, cuda {gpu})"
        if torch.cuda.device_count() >= 2:  # the same steps split over two GPUs: a step sees twice the examples
            pack = work / "two-gpus"
            shutil.copytree(sample, pack)
            launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", 2, "-m", "rolecast.cli"]
            done = run([*launch, "train", pack, "--max-steps", args.steps, "--batch-size", 1, "--eval-steps", args.steps,
                        "--save-steps", args.steps, "--max-eval-examples", 16, "--early-stopping-patience", 0, "--no-progress"])
            two = eval_loss(pack) if done.returncode == 0 else None
            results["two-GPU training"] = ("passed" if two is not None and cpu is not None and abs(two - cpu) <= 0.1
                                           else "FAILED") + f" (accelerate launch, validation loss {two})"
        else:
            results["two-GPU training"] = f"skipped: {torch.cuda.device_count()} GPU"
        base = dequantized_base(work / "base-hf")
        if importlib.util.find_spec("bitsandbytes"):
            pack = work / "qlora"
            shutil.copytree(sample, pack)
            q = train(pack, args.steps, None, ("--base", str(base), "--qlora"))
            results["qlora training"] = ("passed" if q is not None and cpu is not None and abs(q - cpu) <= 0.1
                                         else "FAILED") + f" (validation loss {q})"
        else:
            results["qlora training"] = "skipped: bitsandbytes is not installed"
        if importlib.util.find_spec("vllm"):
            check_vllm(work / "cuda-bf16", base, results)
        else:
            results["vllm"] = "skipped: vllm is not installed"
        check_named_base(args.base, sample, work, args.steps, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\ngpu-check results:")
    for name, outcome in results.items():
        print(f"  {name}: {outcome}")
    return 1 if any("FAILED" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
