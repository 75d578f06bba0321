#!/usr/bin/env python3
"""Checks that embed's cache and embed_torch.py's output agree: joins the image rows on path (view 0 of the
cache) and the text rows on prompt, and reports the cosines between the two tools' embeddings.

    python3 tests/bench/compare.py VL2V_CACHE_DIR TORCH_OUT_DIR [--min-cosine 0.999]

Prints a few lines for people and one JSON line last. Exits 1 when an image or prompt is missing on one side
or the smallest image cosine is below --min-cosine.

The benchmark model has random weights, so its embeddings of different images are already close (mean pairwise
cosine ~0.9); "centred" cosines subtract the PyTorch mean embedding from both sides first, which measures how
well the image-specific part of the embedding agrees.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq


def embeddings(table) -> np.ndarray:
    col = table.column("embedding").combine_chunks()
    dim = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, dim)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def join(keys_a: list[str], emb_a: np.ndarray, keys_b: list[str], emb_b: np.ndarray):
    index_b = {k: i for i, k in enumerate(keys_b)}
    common = [k for k in keys_a if k in index_b]
    only_a = sorted(set(keys_a) - set(index_b))
    only_b = sorted(set(index_b) - set(keys_a))
    ia = {k: i for i, k in enumerate(keys_a)}
    a = emb_a[[ia[k] for k in common]]
    b = emb_b[[index_b[k] for k in common]]
    return common, a, b, only_a, only_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("vl2v", type=Path, help="embed's cache directory (the last line embed prints)")
    parser.add_argument("torch", type=Path, help="embed_torch.py's --out directory")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    args = parser.parse_args()

    ours = pq.read_table(args.vl2v / "images")
    if "view" in ours.column_names:
        ours = ours.filter(pc.equal(ours.column("view"), 0))
    ref = pq.read_table(args.torch / "images")
    paths, a, b, only_ours, only_ref = join(
        ours.column("path").to_pylist(), embeddings(ours), ref.column("path").to_pylist(), embeddings(ref)
    )
    cos = np.sum(unit(a) * unit(b), axis=1)
    mean_ref = embeddings(ref).mean(axis=0)
    centred = np.sum(unit(a - mean_ref) * unit(b - mean_ref), axis=1)
    ref_unit = unit(b)
    pairwise = ref_unit @ ref_unit.T
    n = len(paths)
    mean_pairwise = float((pairwise.sum() - n) / max(n * (n - 1), 1))
    worst = int(np.argmin(cos)) if n else -1

    # The two tools' labels and domains must agree too.
    label_ours = dict(zip(ours.column("path").to_pylist(), ours.column("label").to_pylist()))
    label_ref = dict(zip(ref.column("path").to_pylist(), ref.column("label").to_pylist()))
    label_mismatch = sum(label_ours[p] != label_ref[p] for p in paths)

    text_result = {}
    if (args.vl2v / "texts.parquet").exists() and (args.torch / "texts.parquet").exists():
        t_ours, t_ref = pq.read_table(args.vl2v / "texts.parquet"), pq.read_table(args.torch / "texts.parquet")
        prompts, ta, tb, t_only_ours, t_only_ref = join(
            t_ours.column("prompt").to_pylist(), embeddings(t_ours), t_ref.column("prompt").to_pylist(), embeddings(t_ref)
        )
        tcos = np.sum(unit(ta) * unit(tb), axis=1)
        text_result = {
            "prompts": len(prompts),
            "prompts_only_vl2v": len(t_only_ours),
            "prompts_only_torch": len(t_only_ref),
            "text_min_cosine": float(tcos.min()) if len(prompts) else None,
        }

    result = {
        "images": n,
        "only_vl2v": len(only_ours),
        "only_torch": len(only_ref),
        "label_mismatches": label_mismatch,
        "min_cosine": float(cos.min()) if n else None,
        "mean_cosine": float(cos.mean()) if n else None,
        "worst_path": paths[worst] if n else None,
        "min_centred_cosine": float(centred.min()) if n else None,
        "mean_centred_cosine": float(centred.mean()) if n else None,
        "mean_pairwise_cosine_torch": mean_pairwise,
        **text_result,
    }
    ok = (
        n > 0
        and not only_ours
        and not only_ref
        and label_mismatch == 0
        and result["min_cosine"] >= args.min_cosine
        and not text_result.get("prompts_only_vl2v")
        and not text_result.get("prompts_only_torch")
    )
    result["ok"] = ok
    print(
        f"embeddings: {n} images joined on path ({len(only_ours)} only in vl2v, {len(only_ref)} only in PyTorch); "
        f"cosine vl2v vs PyTorch min {result['min_cosine']:.6f} mean {result['mean_cosine']:.6f} "
        f"(worst {result['worst_path']}); centred min {result['min_centred_cosine']:.4f} "
        f"mean {result['mean_centred_cosine']:.4f}; expected min >= {args.min_cosine}"
        if n
        else "embeddings: no image in common"
    )
    if text_result:
        print(
            f"texts: {text_result['prompts']} prompts joined, min cosine "
            + (f"{text_result['text_min_cosine']:.6f}" if text_result["text_min_cosine"] is not None else "n/a")
        )
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
