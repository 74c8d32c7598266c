"""The model: a speech backbone (HF transformers, wav2vec2 | HuBERT | Whisper encoder), LoRA and the
brain-response head (``tuner``), and phone-recognition pretraining of random-init backbones."""
