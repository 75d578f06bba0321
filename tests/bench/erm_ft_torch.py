"""The PyTorch side of the whole-run erm-ft benchmark (tests/bench/run_erm_ft_bench.sh).

What a user would write for `distill run --algorithm erm-ft` with a ResNet-18 student, following the official
VL2V-ADiP code (a DomainBed + SWAD fork: `domainbed/algorithms/algorithms.py` ERM, `networks.ResNet`,
`datasets/transforms.py`, `trainer.py`, `evaluator.py`):

- one torchvision `ImageFolder` per domain; DomainBed's split of each (`split_dataset(env, int(len(env) *
  holdout_fraction), seed_hash(trial_seed, env_i))`: the first part is `out`, the rest `in`), bit for bit;
- training: the in splits of the training domains with DomainBed's augmentation (`aug`: RandomResizedCrop 224
  scale (0.7, 1), flip, ColorJitter(0.3, 0.3, 0.3, 0.3), RandomGrayscale 0.1, ImageNet mean/std), a
  `DataLoader` per domain sampling with replacement, 32 images each, `num_workers=0`;
- the model: torchvision `resnet18` without its fc (the weights file's), BatchNorm frozen (`freeze_bn`: BN
  layers in eval mode, their affine parameters train), dropout 0, `nn.Linear(512, C)`, cross-entropy on the
  concatenated minibatch, `torch.optim.Adam` (lr 5e-5, no weight decay) over everything;
- evaluation after the first and the last step, as the official "fast" evaluator does it: the test domain's
  in and out splits and the training domains' out splits (the training domains' in splits are skipped), the
  eval transform (`basic`: Resize((224, 224)), ImageNet mean/std), batches of 64 (the official
  `test_batchsize`), accuracy and mean loss under `torch.no_grad()`; `train_out` is the training domains'
  mean out accuracy, and the model is saved (`state_dict`, as the official `TE<k>_best.pth`) when it ties the
  best so far; a results.jsonl line per evaluation.

Prints one JSON line: versions, seconds for the imports, the set-up (weights, folders, splits), each training
step and each evaluation, the whole run after the imports, and every evaluation's accuracies.

    python3 tests/bench/erm_ft_torch.py --make-weights W.safetensors        # random ResNet-18 (seed 0)
    python3 tests/bench/erm_ft_torch.py --root IMAGES --weights W.safetensors --test-domain clipart \
        --steps 4 --threads 2 --out DIR
"""

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, RandomSampler, Subset  # noqa: E402
from torchvision import transforms as T  # noqa: E402

IMPORTS_S = time.perf_counter() - _T0

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
BASIC = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize(mean=MEAN, std=STD)])
AUG = T.Compose(
    [
        T.RandomResizedCrop(224, scale=(0.7, 1.0)),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.3, 0.3, 0.3, 0.3),
        T.RandomGrayscale(p=0.1),
        T.ToTensor(),
        T.Normalize(mean=MEAN, std=STD),
    ]
)


def seed_hash(*args):
    """DomainBed's misc.seed_hash."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


def split(n_images, holdout, seed):
    """DomainBed's split_dataset: (out keys, in keys)."""
    keys = list(range(n_images))
    np.random.RandomState(seed).shuffle(keys)
    n = int(n_images * holdout)
    return keys[:n], keys[n:]


class ResNet(nn.Module):
    """DomainBed's networks.ResNet: the backbone without its fc, BatchNorm frozen."""

    def __init__(self, weights):
        super().__init__()
        self.network = torchvision.models.resnet18(weights=None)
        self.network.fc = nn.Identity()
        self.network.load_state_dict(load_file(weights))
        self.n_outputs = 512
        self.dropout = nn.Dropout(0.0)
        self.freeze_bn()

    def forward(self, x):
        return self.dropout(self.network(x))

    def train(self, mode=True):
        super().train(mode)
        self.freeze_bn()
        return self

    def freeze_bn(self):
        for m in self.network.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


def make_weights(path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def accuracy(network, loader):
    """The official evaluator's accuracy_from_loader: accuracy and mean cross-entropy."""
    correct, total, losssum = 0, 0, 0.0
    network.eval()
    for x, y in loader:
        with torch.no_grad():
            logits = network(x)
            loss = F.cross_entropy(logits, y).item()
        losssum += loss * len(x)
        correct += logits.argmax(1).eq(y).float().sum().item()
        total += len(x)
    network.train()
    return correct / total, losssum / total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-weights", help="write a random torchvision ResNet-18 (no fc) here and exit")
    ap.add_argument("--root", help="DomainBed-layout dataset folder")
    ap.add_argument("--weights")
    ap.add_argument("--test-domain")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--test-batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--holdout-fraction", type=float, default=0.2)
    ap.add_argument("--trial-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="results.jsonl and the best model go here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.make_weights:
        make_weights(args.make_weights)
        return
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    domains = sorted(d for d in os.listdir(args.root) if os.path.isdir(os.path.join(args.root, d)))
    test_env = domains.index(args.test_domain)
    train_envs = [i for i in range(len(domains)) if i != test_env]
    train_loaders, eval_sets = [], []
    for env_i, domain in enumerate(domains):
        train_view = torchvision.datasets.ImageFolder(os.path.join(args.root, domain), transform=AUG)
        eval_view = torchvision.datasets.ImageFolder(os.path.join(args.root, domain), transform=BASIC)
        out_keys, in_keys = split(len(eval_view), args.holdout_fraction, seed_hash(args.trial_seed, env_i))
        if env_i != test_env:
            in_split = Subset(train_view, in_keys)
            sampler = RandomSampler(in_split, replacement=True, num_samples=args.steps * args.batch_size)
            train_loaders.append(DataLoader(in_split, batch_size=args.batch_size, sampler=sampler, num_workers=0))
        # The official "fast" evaluator: every split but the training domains' in splits.
        if env_i == test_env:
            eval_sets.append((f"env{env_i}_in", Subset(eval_view, in_keys)))
        eval_sets.append((f"env{env_i}_out", Subset(eval_view, out_keys)))
    classes = len(train_view.classes)

    featurizer = ResNet(args.weights)
    network = nn.Sequential(featurizer, nn.Linear(featurizer.n_outputs, classes))
    network.train()
    optimizer = torch.optim.Adam(network.parameters(), lr=args.lr, weight_decay=0.0)
    os.makedirs(args.out, exist_ok=True)
    setup_s = time.perf_counter() - started

    step_s, eval_s, records, best = [], [], [], None
    batches = zip(*train_loaders)
    for step in range(args.steps):
        t = time.perf_counter()
        minibatches = next(batches)
        x = torch.cat([x for x, _ in minibatches])
        y = torch.cat([y for _, y in minibatches])
        loss = F.cross_entropy(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record = {"step": step, "loss": loss.item()}
        step_s.append(time.perf_counter() - t)
        if step == 0 or step == args.steps - 1:
            t = time.perf_counter()
            train_out = []
            for name, subset in eval_sets:
                acc, mean_loss = accuracy(network, DataLoader(subset, batch_size=args.test_batch_size, num_workers=0))
                record[f"{name}_acc"] = acc
                if int(name[3 : name.index("_")]) == test_env:
                    record[f"test_{name.split('_')[1]}"] = acc
                else:
                    train_out.append(acc)
                    record[f"{name}_loss"] = mean_loss
            record["train_out"] = sum(train_out) / len(train_out)
            records.append(record)
            with open(os.path.join(args.out, "results.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
            if best is None or record["train_out"] >= best:
                best = record["train_out"]
                torch.save({"model_dict": network.state_dict(), "step": step}, os.path.join(args.out, "TE_best.pth"))
            eval_s.append(time.perf_counter() - t)
    total_s = time.perf_counter() - started
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "threads": args.threads,
                "imports_s": IMPORTS_S,
                "setup_s": setup_s,
                "step_s": step_s,
                "eval_s": eval_s,
                "eval_images": sum(len(s) for _, s in eval_sets),
                "run_s": total_s,
                "records": records,
            }
        )
    )


if __name__ == "__main__":
    main()
