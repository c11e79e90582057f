"""Training a pack's LoRA: rows from its scenes (``data``), the SFT run (``sft``),
DPO or ORPO after it (``preference``), what every trainer run shares (``runtime``:
devices, threads, the time budget, signals, checkpoints) and the GGUF export (``export``).
"""
