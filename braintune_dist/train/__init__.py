"""Brain-tuning: model (backbone + LoRA + head), losses, distributed engine, Ray Train worker loop."""
