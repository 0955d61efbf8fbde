"""Trainer: flow-matching training of LAP + refiner + DiT on a frozen VLM (accelerate)."""
