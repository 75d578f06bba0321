#!/usr/bin/env python3
"""Writes a randomly initialised CLIP with the real OpenAI ViT-B/16 (or ViT-B/32) architecture, for benchmarks.

    python3 tests/bench/make_bench_model.py OUT_DIR [--arch b16|b32]

OUT_DIR gets the Hugging Face hub layout that both `embed --model OUT_DIR` and transformers read:
  config.json        the structure of openai/clip-vit-base-patch16 (or -patch32): text tower 512 wide, 2048 MLP,
                     12 layers, 8 heads; vision tower 768 wide, 3072 MLP, 12 layers, 12 heads; image 224,
                     patch 16 (32); projection 512; quick_gelu; logit scale 2.6592
  model.safetensors  float32, transformers' own initialisation with torch.manual_seed(0) (~600 MB)
  tokenizer.json     copied from tests/fixtures/tiny_clip/ (the real OpenAI CLIP BPE, 49408 tokens)

The weights are random, so the embeddings mean nothing; the cost of computing them is exactly that of the real
model. Does nothing when OUT_DIR already holds all three files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKENIZER = HERE.parent / "fixtures" / "tiny_clip" / "tokenizer.json"
FILES = ("config.json", "model.safetensors", "tokenizer.json")
PATCH = {"b16": 16, "b32": 32}


def hub_config(arch: str) -> dict:
    """openai/clip-vit-base-patch{16,32}'s config.json, less the generation defaults transformers 4.x dumped into
    every sub-config (max_length, num_beams, ...), which mean nothing for CLIP."""
    text = {
        "model_type": "clip_text_model",
        "vocab_size": 49408,
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
        "projection_dim": 512,
        # as on the hub: eos 2 makes transformers pool at the argmax token id (<|endoftext|>), like OpenAI
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }
    vision = {
        "model_type": "clip_vision_model",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_channels": 3,
        "image_size": 224,
        "patch_size": PATCH[arch],
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
        "projection_dim": 512,
    }
    return {
        "_name_or_path": f"openai/clip-vit-base-patch{PATCH[arch]}",
        "architectures": ["CLIPModel"],
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": 512,
        "text_config": text,
        "torch_dtype": "float32",
        "transformers_version": None,
        "vision_config": vision,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--arch", choices=sorted(PATCH), default="b16")
    args = parser.parse_args()
    out: Path = args.out_dir

    if all((out / f).is_file() for f in FILES):
        have = json.loads((out / "config.json").read_text())["vision_config"].get("patch_size")
        if have != PATCH[args.arch]:
            sys.exit(f"{out} holds a patch-{have} model, not {args.arch}; use another folder or delete it")
        print(f"{out}: model present, skipped", file=sys.stderr)
        return

    started = time.perf_counter()
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    transformers.logging.set_verbosity_error()
    config_dict = hub_config(args.arch)
    config = CLIPConfig(**{k: v for k, v in config_dict.items() if not k.startswith("_") and k != "transformers_version"})
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    state = {name: t.detach().to(torch.float32).contiguous() for name, t in model.state_dict().items()}
    # Non-persistent buffers (position_ids) are not in state_dict(); the hub files do not carry them either.
    params = sum(t.numel() for t in state.values())

    # Written under temporary names and renamed, model.safetensors last: a half-written folder is never "present".
    out.mkdir(parents=True, exist_ok=True)
    tmp_weights = out / "model.safetensors.tmp"
    save_file(state, str(tmp_weights), metadata={"format": "pt"})
    (out / "config.json.tmp").write_text(json.dumps(config_dict, indent=2) + "\n")
    shutil.copyfile(TOKENIZER, out / "tokenizer.json.tmp")
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        tmp = out / f"{name}.tmp"
        tmp.chmod(0o644)
        tmp.replace(out / name)

    # Reload exactly what was written, as embed_torch.py will.
    reloaded = CLIPModel.from_pretrained(out, dtype=torch.float32)
    got = reloaded.state_dict()
    missing = set(state) ^ set(got)
    assert not missing, f"keys differ after reload: {sorted(missing)[:5]}"
    assert all(torch.equal(got[k], state[k]) for k in state), "weights differ after reload"
    print(
        f"{out}: random CLIP ViT-{args.arch.upper()[0]}/{PATCH[args.arch]} ({params / 1e6:.1f} M parameters, float32, "
        f"seed 0) in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
