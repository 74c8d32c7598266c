"""What brain-tuning does to the model itself: downstream tasks (readers of TIMIT, Speech Commands v2,
CREMA-D and SLURP, and an offline espeak-ng suite), linear probes per layer, Whisper transcription, and the
semantic–phonetic preference of word representations. Torch-free at module level, except ``features``."""
