#!/usr/bin/env python3
"""Writes a deterministic benchmark dataset of procedurally drawn JPEGs in DomainBed layout.

    python3 tests/bench/make_bench_images.py OUT_ROOT [--n 480]

OUT_ROOT/<domain>/<class>/img_NNNNN.jpg with 4 domains x 4 classes, N images spread evenly over the 16 folders;
sizes vary between 300 and 640 px a side (portrait, landscape and square), JPEG quality 90 (4:2:0, like most
photos). `embed --dataset bench --root OUT_ROOT` takes it as is. Everything follows from the file name, so two
runs write byte-identical files. OUT_ROOT/.bench.json (hidden, so ignored by both tools) records what was
written; when it matches the request nothing is done, otherwise OUT_ROOT is rewritten.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DOMAINS = ["clipart", "painting", "real_photo", "sketch"]
CLASSES = ["bicycle", "coffee_mug", "dog", "tree"]
MARKER = ".bench.json"
VERSION = 1
QUALITY = 90


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))


def draw(name: str, domain: int) -> Image.Image:
    """A distinct picture per name: colour gradient, stripes, a few filled shapes, texture noise; the domain changes
    the style a little (flat colours, blur, grey lines) so the folders do not all look alike."""
    rng = rng_for(name)
    w, h = (int(v) for v in rng.integers(300, 641, 2))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = x / (w - 1), y / (h - 1)
    lo, hi = rng.uniform(0, 120, 3), rng.uniform(135, 255, 3)
    img = np.stack(
        [lo[0] + (hi[0] - lo[0]) * u, lo[1] + (hi[1] - lo[1]) * v, lo[2] + (hi[2] - lo[2]) * (1 - u) * v], -1
    )
    theta, period = rng.uniform(0, np.pi), rng.uniform(4, 24)
    stripes = np.sin((x * np.cos(theta) + y * np.sin(theta)) / period) > 0.5
    img[stripes] = img[stripes] * 0.6 + rng.uniform(0, 255, 3).astype(np.float32) * 0.4
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(pil)

    def box(cx, cy, rx, ry):
        return [int((cx - rx) * w), int((cy - ry) * h), int((cx + rx) * w), int((cy + ry) * h)]

    def colour():
        return tuple(int(c) for c in rng.integers(0, 256, 3))

    for _ in range(int(rng.integers(3, 8))):
        kind = int(rng.integers(0, 3))
        cx, cy, rx, ry = *rng.uniform(0.1, 0.9, 2), *rng.uniform(0.05, 0.3, 2)
        if kind == 0:
            d.ellipse(box(cx, cy, rx, ry), fill=colour(), outline=colour(), width=3)
        elif kind == 1:
            d.rectangle(box(cx, cy, rx, ry), fill=colour())
        else:
            d.polygon([(int(a * w), int(b * h)) for a, b in rng.uniform(0, 1, (3, 2))], fill=colour())
    for _ in range(int(rng.integers(2, 6))):
        d.line([(int(a * w), int(b * h)) for a, b in rng.uniform(0, 1, (4, 2))], fill=colour(), width=int(rng.integers(1, 6)))
    if DOMAINS[domain] == "painting":
        pil = pil.filter(ImageFilter.GaussianBlur(2))
    elif DOMAINS[domain] == "sketch":
        pil = pil.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda p: 255 - p).convert("RGB")
    noise = {"clipart": 1.0, "painting": 6.0, "real_photo": 10.0, "sketch": 2.0}[DOMAINS[domain]]
    arr = np.asarray(pil).astype(np.float32) + rng.normal(0, noise, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_root", type=Path)
    parser.add_argument("--n", type=int, default=480, help="number of images (default 480)")
    args = parser.parse_args()
    if args.n < 1:
        sys.exit("--n must be at least 1")
    root: Path = args.out_root
    want = {"version": VERSION, "n": args.n, "domains": DOMAINS, "classes": CLASSES, "quality": QUALITY}
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == want:
        print(f"{root}: {args.n} images present, skipped", file=sys.stderr)
        return
    if root.exists():
        shutil.rmtree(root)

    started = time.perf_counter()
    tmp = root.with_name(root.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    cells = [(d, c) for d in range(len(DOMAINS)) for c in range(len(CLASSES))]
    pixels = 0
    for i in range(args.n):
        d, c = cells[i % len(cells)]
        folder = tmp / DOMAINS[d] / CLASSES[c]
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{DOMAINS[d]}/{CLASSES[c]}/img_{i:05d}.jpg"
        img = draw(name, d)
        pixels += img.width * img.height
        img.save(tmp / name, "JPEG", quality=QUALITY)
    (tmp / MARKER).write_text(json.dumps(want) + "\n")
    tmp.rename(root)
    print(
        f"{root}: {args.n} JPEGs, {len(DOMAINS)} domains x {len(CLASSES)} classes, mean {pixels / args.n / 1e3:.0f} kpixels, "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
