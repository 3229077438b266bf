"""LoRA adapters (PEFT folders, kohya files): read, apply onto a base, merge, extract."""
