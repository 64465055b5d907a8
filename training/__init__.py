"""Fine-tuning: data formats, chat templates, LoRA / QLoRA / full, checkpoints, export.

A library: may import `pipelines` only.
"""
