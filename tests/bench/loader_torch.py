"""The PyTorch side of the loader benchmark (tests/bench/run_loader_bench.sh): a `DataLoader` over a folder of
JPEGs with DomainBed's training transform (`domainbed/datasets.py`, `augment=True`: RandomResizedCrop(224,
scale=(0.7, 1.0)), RandomHorizontalFlip, ColorJitter(0.3, 0.3, 0.3, 0.3), RandomGrayscale, ToTensor,
Normalize(ImageNet)), batch 32, `--workers` worker processes (0: in the main process), every image once.
vl2v's loader does the same work (its crops squash to 224² bilinear as RandomResizedCrop does).

Prints one JSON line: {"torch", "torchvision", "images", "workers", "seconds", "images_per_s"}.
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torchvision import transforms


class Folder(torch.utils.data.Dataset):
    def __init__(self, root, transform):
        self.paths = sorted(Path(root).rglob("*.jpg"))
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(Image.open(self.paths[i]).convert("RGB"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    augment = transforms.Compose(
        [
            transforms.RandomResizedCrop(224, scale=(0.7, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.3, 0.3, 0.3, 0.3),
            transforms.RandomGrayscale(),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    data = Folder(args.root, augment)
    loader = torch.utils.data.DataLoader(data, batch_size=32, num_workers=args.workers, shuffle=False)
    started = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch.shape[0]
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "images": n,
                "workers": args.workers,
                "seconds": seconds,
                "images_per_s": n / seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
