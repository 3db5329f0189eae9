"""LoRA files and datasets on disk: safetensors inspection without torch, canonical ingest, training
metadata, dataset fingerprints and synthetic LoRAs for tests and the demo."""
