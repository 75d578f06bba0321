"""The PyTorch side of the ADiP Align benchmark (tests/bench/run_align_bench.sh).

The training loop of VL2V-ADiP's Align stage (`DFC_STAGE1`) as the official DomainBed-based code runs it,
on cached features instead of images: only the projection `Linear(d_student -> d_teacher)` (with bias)
trains, with `torch.optim.Adam`, on

    lambda * (-mean cos(p, I)) + (1 - lambda) * (-mean cos(p, T_y))

where `p` is the projected student feature, `I` the teacher's embedding of the same (image, view) and `T_y`
the text embedding of the label's class. Every `--checkpoint-freq` steps (and at step 0 and the last step)
it evaluates the zero-shot head `logit_scale * cos(p, T_c)` on the training domains' out splits and the test
domain's in and out splits, the way DomainBed's `misc.accuracy` does (model.eval, torch.no_grad, batches,
argmax). The features are random (seeded) with the sizes of the real run; only the time matters.

Prints one JSON line: {"seconds", "steps", "torch", "threads", ...}. `seconds` covers the training loop with
its evaluations (not the generation of the random features).
"""

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def domainbed_split(n, holdout_fraction, seed):
    """DomainBed's misc.split_dataset: a seeded shuffle, the first `n * holdout` images are `out`."""
    keys = list(range(n))
    np.random.RandomState(seed).shuffle(keys)
    cut = int(n * holdout_fraction)
    return keys[cut:], keys[:cut]  # in, out


def dfc_loss(proj, image, texts, labels, lmd):
    """The official `dfc_loss`: image and text cosine terms, weighted by lambda."""
    cos_image = F.cosine_similarity(proj, image, dim=-1).mean()
    cos_text = F.cosine_similarity(proj, texts[labels], dim=-1).mean()
    return lmd * -cos_image + (1 - lmd) * -cos_text, cos_image, cos_text


class DfcStage1(nn.Module):
    """The Align stage on cached student features: projection + Adam, zero-shot prediction."""

    def __init__(self, d_student, d_teacher, texts, hparams):
        super().__init__()
        self.hparams = hparams
        self.proj = nn.Linear(d_student, d_teacher)
        self.register_buffer("texts", F.normalize(texts, dim=-1))
        self.logit_scale = 100.0
        self.optimizer = torch.optim.Adam(
            self.proj.parameters(), lr=hparams["lr"], weight_decay=hparams["weight_decay"]
        )

    def update(self, minibatches):
        all_x = torch.cat([x for x, _, _ in minibatches])
        all_t = torch.cat([t for _, t, _ in minibatches])
        all_y = torch.cat([y for _, _, y in minibatches])
        p = self.proj(all_x)
        loss, cos_image, cos_text = dfc_loss(p, all_t, self.texts, all_y, self.hparams["lambda"])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "cos_image": cos_image.item(), "cos_text": cos_text.item()}

    def predict(self, x):
        p = F.normalize(self.proj(x), dim=-1)
        return self.logit_scale * p @ self.texts.t()


def accuracy(network, x_all, y_all, batch_size):
    """DomainBed's misc.accuracy over a split held in memory, in batches of `batch_size`."""
    correct, total = 0, 0
    network.eval()
    with torch.no_grad():
        for start in range(0, len(x_all), batch_size):
            x, y = x_all[start : start + batch_size], y_all[start : start + batch_size]
            p = network.predict(x)
            correct += (p.argmax(1).eq(y).float()).sum().item()
            total += len(x)
    network.train()
    return correct / total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=15_588)
    ap.add_argument("--domains", type=int, default=4)
    ap.add_argument("--classes", type=int, default=65)
    ap.add_argument("--views", type=int, default=2, help="cached views per image, view 0 included")
    ap.add_argument("--d-student", type=int, default=768)
    ap.add_argument("--d-teacher", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5001)
    ap.add_argument("--batch-size", type=int, default=32, help="images per training domain per step")
    ap.add_argument("--checkpoint-freq", type=int, default=200)
    ap.add_argument("--test-batchsize", type=int, default=128)
    ap.add_argument("--test-env", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n, views = args.images, args.views
    ds, dt = args.d_student, args.d_teacher

    # Cached features: every view of every image, teacher embeddings unit-norm (as CLIP's are cached).
    labels = torch.arange(n) % args.classes
    texts = F.normalize(torch.randn(args.classes, dt), dim=-1)
    teacher = F.normalize(torch.randn(n, views, dt), dim=-1)
    student = torch.randn(n, views, ds)
    domain_of = [i * args.domains // n for i in range(n)]
    members = [[i for i in range(n) if domain_of[i] == d] for d in range(args.domains)]

    pools, evals = [], []
    for env, rows in enumerate(members):
        in_, out = domainbed_split(len(rows), 0.2, seed=env)
        in_ = torch.tensor([rows[k] for k in in_])
        out = torch.tensor([rows[k] for k in out])
        if env == args.test_env:
            evals += [(f"env{env}_in_acc", in_), (f"env{env}_out_acc", out)]
        else:
            pools.append(in_)
            evals.append((f"env{env}_out_acc", out))
    # Evaluation uses view 0 of each image.
    evals = [(name, student[idx, 0].contiguous(), labels[idx]) for name, idx in evals]

    hparams = {"lr": 5e-5, "weight_decay": 0.0, "lambda": 0.5, "batch_size": args.batch_size}
    algorithm = DfcStage1(ds, dt, texts, hparams)

    started = time.perf_counter()
    checkpoint_vals = {}
    results = None
    for step in range(args.steps):
        # One minibatch per training domain: uniform with replacement from its in split, a random
        # augmented view per image (DomainBed's InfiniteDataLoader over cached (image, view) features).
        minibatches = []
        for pool in pools:
            idx = pool[torch.randint(len(pool), (args.batch_size,))]
            view = torch.randint(1, views, (args.batch_size,)) if views > 1 else torch.zeros(args.batch_size, dtype=torch.long)
            minibatches.append((student[idx, view], teacher[idx, view], labels[idx]))
        step_vals = algorithm.update(minibatches)
        for key, val in step_vals.items():
            checkpoint_vals.setdefault(key, []).append(val)

        if step % args.checkpoint_freq == 0 or step == args.steps - 1:
            results = {"step": step}
            for key, val in checkpoint_vals.items():
                results[key] = float(np.mean(val))
            for name, x, y in evals:
                results[name] = accuracy(algorithm, x, y, args.test_batchsize)
            checkpoint_vals = {}
    seconds = time.perf_counter() - started

    print(
        json.dumps(
            {
                "seconds": seconds,
                "steps": args.steps,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "last": results,
            }
        )
    )


if __name__ == "__main__":
    main()
