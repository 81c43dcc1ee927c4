"""Training on TRL + PEFT: SFT (LoRA or full, loss on assistant tokens only) and DPO."""
