#!/usr/bin/env python3
"""The PyTorch + transformers reference for `embed`'s default settings, as a benchmark baseline.

    python3 tests/bench/embed_torch.py --root R --model M --out O [--threads 2] [--batch-size 32] [--workers 2]

Does the work `embed --dataset X --root R --model M` does with its defaults, the way one would in PyTorch:
  - discovers R/<domain>/<class>/<image> exactly like embed (sorted non-hidden folders, images found
    recursively with embed's extensions, sorted by path within a class);
  - decodes each image with Pillow, converts it to RGB (transparency composited on white, as embed does) and
    preprocesses it with transformers' CLIPImageProcessor, built explicitly from M/config.json (shortest edge
    image_size, bicubic, centre crop, OpenAI CLIP mean/std), in a torch DataLoader;
  - runs CLIPModel.get_image_features on batches under torch.inference_mode() and L2-normalises;
  - writes O/images/part-NNNNN.parquet, 256 images each (path, domain, label, embedding = fixed_size_list<float32>,
    zstd), and O/texts.parquet with "a photo of a {class}" and "a {domain} of a {class}" for every class
    (and domain), embedded with get_text_features and L2-normalised.

--workers 2 (the default) decodes and preprocesses in two DataLoader worker processes while the model runs,
as clip-retrieval and most embedding scripts do; --workers 0 does it in the main process between batches.
On a 2-core machine the overlap wins (see tests/bench/README.md).

The last stdout line is JSON: images, seconds (wall clock from after the imports to the end: model load,
texts, images, writing), images_per_s, model_seconds / model_images_per_s (get_image_features and the
normalisation alone), import_seconds (Python imports, measured separately, not in seconds), and the settings.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast  # noqa: E402
from transformers.image_utils import PILImageResampling  # noqa: E402

T_IMPORTED = time.perf_counter()

IMAGE_EXTENSIONS = {"jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "gif"}
TEMPLATES = ["a photo of a {}", "a {domain} of a {}"]
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PART_IMAGES = 256
CONTEXT_LENGTH = 77


# ---------------------------------------------------------------------------------------------------------------
# Dataset discovery, as embed's shared/src/dataset/discovery.rs.


def sorted_entries(folder: Path) -> list[tuple[str, Path, bool]]:
    entries = []
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        entries.append((entry.name, path, path.is_dir()))
    entries.sort()
    return entries


def sorted_subdirs(folder: Path) -> list[str]:
    return [name for name, _, is_dir in sorted_entries(folder) if is_dir]


def collect_images(folder: Path, out: list[Path]) -> None:
    for name, path, is_dir in sorted_entries(folder):
        if is_dir:
            collect_images(path, out)
        else:
            stem, dot, ext = name.rpartition(".")
            if dot and stem and ext.lower() in IMAGE_EXTENSIONS:
                out.append(path)


def discover(root: Path) -> tuple[list[str], list[str], list[tuple[str, int, int]]]:
    """(domains, class folders, [(relative path, domain index, label)]) in embed's order."""
    domains = sorted_subdirs(root)
    if not domains:
        sys.exit(f"{root} has no domain folders (expected root/<domain>/<class>/<image>)")
    classes = sorted_subdirs(root / domains[0])
    for domain in domains[1:]:
        if sorted_subdirs(root / domain) != classes:
            sys.exit(f"domain '{domain}' has different classes from '{domains[0]}'")
    images = []
    for d, domain in enumerate(domains):
        for label, cls in enumerate(classes):
            files: list[Path] = []
            collect_images(root / domain / cls, files)
            for f in sorted(files):
                images.append((f.relative_to(root).as_posix(), d, label))
    if not images:
        sys.exit(f"no images found under {root}")
    return domains, classes, images


# ---------------------------------------------------------------------------------------------------------------
# Images.


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB; any other mode goes through RGBA and is composited onto white (embed's and transformers 5's rule)."""
    if img.mode == "RGB":
        return img
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def build_processor(image_size: int) -> CLIPImageProcessor:
    """transformers' CLIPImageProcessor with openai/clip-vit-base-patch16's preprocessor_config.json values, for
    the model's input size."""
    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        do_convert_rgb=True,
    )


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, root: Path, images: list[tuple[str, int, int]], processor: CLIPImageProcessor):
        self.root, self.images, self.processor = root, images, processor

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        path = self.images[i][0]
        try:
            img = Image.open(self.root / path)
            img.load()  # decodes, and closes the file of a single-frame image
            img = to_rgb(img)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            return i, None, f"{type(e).__name__}: {e}"  # embed skips unreadable images too
        pixels = self.processor(images=img, return_tensors="np")["pixel_values"][0]
        return i, torch.from_numpy(pixels), None


def collate(items):
    good = [(i, px) for i, px, _ in items if px is not None]
    bad = [(i, err) for i, px, err in items if px is None]
    pixels = torch.stack([px for _, px in good]) if good else None
    return [i for i, _ in good], pixels, bad


# ---------------------------------------------------------------------------------------------------------------
# Parquet.


def embedding_array(emb: np.ndarray) -> pa.FixedSizeListArray:
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    item = pa.field("item", pa.float32(), nullable=False)  # embed's (and Arrow's) name for list items
    return pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), type=pa.float32()), type=pa.list_(item, emb.shape[1]))


def write_parquet(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # list items stay "item" (Parquet leaf embedding.list.item), as in embed's files
    pq.write_table(table, tmp, compression="zstd", use_compliant_nested_type=False)
    tmp.replace(path)


def write_part(out: Path, index: int, rows: list[tuple[str, str, int]], emb: np.ndarray) -> None:
    table = pa.table(
        {
            "path": pa.array([r[0] for r in rows], pa.string()),
            "domain": pa.array([r[1] for r in rows], pa.string()),
            "label": pa.array([r[2] for r in rows], pa.int32()),
            "embedding": embedding_array(emb),
        }
    )
    write_parquet(out / "images" / f"part-{index:05d}.parquet", table)


# ---------------------------------------------------------------------------------------------------------------


def l2n(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm(dim=-1, keepdim=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="dataset folder, root/<domain>/<class>/<image>")
    parser.add_argument("--model", type=Path, required=True, help="folder with config.json, model.safetensors, tokenizer.json")
    parser.add_argument("--out", type=Path, required=True, help="output folder (images/part-*.parquet, texts.parquet)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model batch (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2; 0 = decode in the main process)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation (default sdpa)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    t0 = time.perf_counter()

    # ---- model, tokenizer, preprocessing -----------------------------------------------------------------------
    config = json.loads((args.model / "config.json").read_text())
    image_size = int(config.get("vision_config", {}).get("image_size", 224))
    model = CLIPModel.from_pretrained(args.model, dtype=torch.float32, attn_implementation=args.attn).eval()
    tokenizer = CLIPTokenizerFast(
        tokenizer_file=str(args.model / "tokenizer.json"),
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=CONTEXT_LENGTH,
    )
    processor = build_processor(image_size)
    t_loaded = time.perf_counter()

    # ---- dataset and texts ---------------------------------------------------------------------------------
    domains, class_folders, images = discover(args.root)
    class_names = [c.replace("_", " ") for c in class_folders]
    print(f"dataset: {len(images)} images, {len(domains)} domains, {len(class_folders)} classes in {args.root}", file=sys.stderr)
    (args.out / "images").mkdir(parents=True, exist_ok=True)

    t_texts = time.perf_counter()
    prompts = []  # (label, class name, template, domain folder or None, text), in embed's order
    for label, name in enumerate(class_names):
        for template in TEMPLATES:
            if "{domain}" in template:
                for domain in domains:
                    text = template.replace("{domain}", domain.replace("_", " ")).replace("{}", name, 1)
                    prompts.append((label, name, template, domain, text))
            else:
                prompts.append((label, name, template, None, template.replace("{}", name, 1)))
    with torch.inference_mode():
        text_emb = []
        for start in range(0, len(prompts), 256):
            tokens = tokenizer(
                [p[4] for p in prompts[start : start + 256]],
                padding=True,
                truncation=True,
                max_length=CONTEXT_LENGTH,
                return_tensors="pt",
            )
            text_emb.append(l2n(model.get_text_features(**tokens)).numpy())
    texts = pa.table(
        {
            "label": pa.array([p[0] for p in prompts], pa.int32()),
            "class_name": pa.array([p[1] for p in prompts], pa.string()),
            "template": pa.array([p[2] for p in prompts], pa.string()),
            "domain": pa.array([p[3] for p in prompts], pa.string()),
            "prompt": pa.array([p[4] for p in prompts], pa.string()),
            "embedding": embedding_array(np.concatenate(text_emb)),
        }
    )
    write_parquet(args.out / "texts.parquet", texts)
    text_seconds = time.perf_counter() - t_texts

    # ---- images --------------------------------------------------------------------------------------------
    t_images = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        ImageDataset(args.root, images, processor),
        batch_size=args.batch_size,
        shuffle=False,
        num_workers=args.workers,
        collate_fn=collate,
    )
    model_seconds = 0.0
    done, skipped = 0, []
    pending: list[tuple[int, np.ndarray]] = []  # (image index, embedding) not yet written
    part = 0  # parts are fixed ranges of the sorted image list, 256 images each, as in embed

    with torch.inference_mode():
        for b, (indices, pixels, bad) in enumerate(loader):
            for i, err in bad:
                print(f"skipped {images[i][0]}: {err}", file=sys.stderr)
                skipped.append(images[i][0])
            if pixels is not None:
                started = time.perf_counter()
                emb = l2n(model.get_image_features(pixel_values=pixels)).numpy()
                model_seconds += time.perf_counter() - started
                pending.extend(zip(indices, emb))
                done += len(indices)
            covered = min((b + 1) * args.batch_size, len(images))  # the loader keeps order: batch b is a range
            while part * PART_IMAGES < len(images) and covered >= min((part + 1) * PART_IMAGES, len(images)):
                end_index = min((part + 1) * PART_IMAGES, len(images))
                ready = [(i, e) for i, e in pending if i < end_index]
                pending = [(i, e) for i, e in pending if i >= end_index]
                if ready:
                    rows = [(images[i][0], domains[images[i][1]], images[i][2]) for i, _ in ready]
                    write_part(args.out, part, rows, np.stack([e for _, e in ready]))
                part += 1
    assert not pending, "every embedding was written"
    t_end = time.perf_counter()

    seconds = t_end - t0
    result = {
        "images": done,
        "skipped": len(skipped),
        "seconds": round(seconds, 3),
        "images_per_s": round(done / seconds, 3),
        "model_seconds": round(model_seconds, 3),
        "model_images_per_s": round(done / max(model_seconds, 1e-9), 3),
        "load_seconds": round(t_loaded - t0, 3),
        "text_seconds": round(text_seconds, 3),
        "image_loop_seconds": round(t_end - t_images, 3),
        "import_seconds": round(T_IMPORTED - T_START, 3),
        "prompts": len(prompts),
        "threads": args.threads,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "attn": args.attn,
        "image_size": image_size,
        "patch_size": config.get("vision_config", {}).get("patch_size"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
