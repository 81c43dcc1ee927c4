"""Trainer operators: SFT and DPO on TRL + PEFT."""
