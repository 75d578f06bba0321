"""The PyTorch side of the student-step benchmark (tests/bench/run_step_bench.sh).

One ADiP Distill training step (`DFC_STAGE2`) as the official code runs it: a batch of 224x224 images through
the student in train mode with BatchNorm frozen (`freeze_bn`: BN layers in eval mode), the frozen projection
`Linear(d_student -> 512)`, the official `dfc_loss` against random unit teacher image embeddings and class
text embeddings, backward, `torch.optim.Adam` over the backbone's parameters only.

Students: torchvision `resnet18`/`resnet50` (fc removed) and timm `vit_small_patch16_224`/
`vit_base_patch16_224` (head removed), random weights (seeded; only the time matters). `--save DIR` also
writes each student's weights as safetensors under its checkpoint names (what vl2v loads), so that both
sides run the same model.

Prints one JSON line: {"torch", "threads", "batch", "students": {name: {"seconds": median step, "steps"}}}.
"""

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


def student(name):
    if name == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(weights=None)
        model.fc = nn.Identity()
        return model, 512
    if name == "resnet50":
        import torchvision

        model = torchvision.models.resnet50(weights=None)
        model.fc = nn.Identity()
        return model, 2048
    if name in ("vit-small", "vit-base"):
        import timm

        arch = {"vit-small": "vit_small_patch16_224", "vit-base": "vit_base_patch16_224"}[name]
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        return model, model.num_features
    raise SystemExit(f"unknown student {name}")


def freeze_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--students", default="resnet18,vit-small")
    ap.add_argument("--save", default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument(
        "--no-tf32",
        action="store_true",
        help="cuda: convolutions in strict fp32 (PyTorch's default lets cuDNN use TF32 for them)",
    )
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="the student's forward under torch.autocast(bfloat16), as vl2v's --precision bf16",
    )
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    for name in args.students.split(","):
        model, dim = student(name)
        if args.save:
            from safetensors.torch import save_file

            os.makedirs(args.save, exist_ok=True)
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, os.path.join(args.save, f"{name}.safetensors"))
        model.to(dev).train()
        freeze_bn(model)
        proj = nn.Linear(dim, 512).to(dev)
        for p in proj.parameters():
            p.requires_grad_(False)
        texts = F.normalize(torch.randn(65, 512), dim=-1).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=5e-5)
        times = []
        for step in range(args.steps + 1):
            # The batch is made on the host and moved inside the timed step, as a loader's would be.
            x = torch.randn(args.batch, 3, 224, 224)
            image = F.normalize(torch.randn(args.batch, 512), dim=-1).to(dev)
            labels = torch.randint(0, 65, (args.batch,)).to(dev)
            sync()
            start = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                features = model(x.to(dev))
            p = proj(features.float())
            cos_image = F.cosine_similarity(p, image, dim=-1).mean()
            cos_text = F.cosine_similarity(p, texts[labels], dim=-1).mean()
            loss = 0.5 * -cos_image + 0.5 * -cos_text
            opt.zero_grad()
            loss.backward()
            opt.step()
            sync()
            if step > 0:  # the first step warms up allocators and kernels
                times.append(time.perf_counter() - start)
        results[name] = {"seconds": statistics.median(times), "steps": len(times)}
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": args.threads,
                "batch": args.batch,
                "device": args.device + (" strict fp32" if args.no_tf32 else "") + (" bf16" if args.bf16 else ""),
                "students": results,
            }
        )
    )


if __name__ == "__main__":
    main()
