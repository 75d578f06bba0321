"""`make domainbed-check`: DomainBed's own collect_results.py and model selection read a vl2v dataset folder.

Usage: check_collect_results.py RUNS/DATASET

RUNS/DATASET is a folder `distill report` has reported: report.md, report.json (every run's selection) and
domainbed/ (the flat view). DomainBed's code (tests/fixtures/domainbed, commit b93c22a1: collect_results.py,
reporting.py, query.py and model_selection.py unchanged; torch-free excerpts of datasets.py, algorithms.py and
misc.py) must:

1. run collect_results.py over domainbed/ without error, printing every row of the report (a benchmark
   DomainBed lacks, such as the demo's synthdg, is registered first with its environments, as a DomainBed user
   adds a dataset to datasets.py: DomainBed's averages table divides by zero without any known dataset);
2. select, with its training-domain validation method, the evaluation `distill report` selected for every
   run: the same step, the same validation and held-out accuracies (a SWAD run: its averaged model), within
   1e-12: distill reads results.jsonl with serde_json's default float parsing, which can be one unit in the
   last place off for 17-digit numbers (seen: train_out 0.36111111111111116 in results.jsonl, 0.3611111111111112
   in report.json), while DomainBed's np.mean of the env{i}_out_acc equals the train_out the run wrote;
3. print the same per-domain means as report.md (one decimal, ±0.1 for a different rounding of a .x5).
"""

import json
import os
import re
import runpy
import sys

import numpy as np

from domainbed import datasets, model_selection
from domainbed.lib import reporting

NO_SWAD = "-noswad"
IID = model_selection.IIDAccuracySelectionMethod


def fail(message):
    sys.exit(f"domainbed-check: {message}")


def main(folder):
    with open(os.path.join(folder, "report.json")) as f:
        report = json.load(f)
    runs = report["runs"]
    view = os.path.join(folder, "domainbed")
    if not runs:
        fail(f"{folder}/report.json lists no runs")

    # The run folder's DomainBed names, from the flat view itself.
    records = reporting.load_records(view)
    dataset_names = {r["args"]["dataset"] for r in records}
    if len(dataset_names) != 1:
        fail(f"one dataset expected in {view}, found {sorted(dataset_names)}")
    dataset = dataset_names.pop()
    domains = {r["test_env"]: r["test_domain"] for r in runs}
    if sorted(domains) != list(range(len(domains))):
        fail(f"every domain needs a run: {domains}")
    if dataset not in datasets.DATASETS:
        registered = type(dataset, (datasets.MultipleEnvironmentImageFolder,),
                          {"ENVIRONMENTS": [domains[i] for i in range(len(domains))]})
        setattr(datasets, dataset, registered)
        datasets.DATASETS.append(dataset)
    elif len(datasets.get_dataset_class(dataset).ENVIRONMENTS) != len(domains):
        fail(f"{dataset}: DomainBed has {datasets.num_environments(dataset)} environments, the runs {len(domains)}")

    # 1. collect_results.py as DomainBed runs it (it tees its output to <input_dir>/results.txt).
    argv, stdout = sys.argv, sys.stdout
    sys.argv = ["collect_results.py", "--input_dir", view]
    try:
        runpy.run_module("domainbed.scripts.collect_results", run_name="__main__")
    finally:
        sys.argv, sys.stdout = argv, stdout
    with open(os.path.join(view, "results.txt")) as f:
        printed = f.read()
    total = sum(1 for _ in open_lines(view))
    if f"Total records: {total}" not in printed:
        fail(f"collect_results did not read the {total} records of {view}")

    # 2. The same selection, run by run, through DomainBed's grouping and its selection method.
    groups = {}
    for g in reporting.get_grouped_records(records):
        groups[(g["trial_seed"], g["algorithm"], g["test_env"])] = g["records"]
    seen = set()
    checked = 0
    for run in runs:
        key = (run["trial_seed"], run["algorithm"], run["test_env"])
        if key in seen:
            fail(f"{run['run']}: another run of the same trial seed (DomainBed's replicate) shares its group")
        seen.add(key)
        swad = run["swad_test_in"] is not None
        cases = [(run["algorithm"], run["ood"], run["id"], None if swad else run["step"])]
        if swad:
            cases.append((run["algorithm"] + NO_SWAD, run["test_in"], run["train_out"], run["step"]))
        leaf = run["run"].replace("\\", "/").split("/")[-1]
        entries = sorted(f"{c[0]}-{run['test_domain']}-{leaf}" for c in cases)
        if entries != sorted(run["domainbed"]):
            fail(f"{run['run']}: DomainBed entries {run['domainbed']}, expected {entries}")
        for algorithm, test_acc, val_acc, step in cases:
            group = groups.get((run["trial_seed"], algorithm, run["test_env"]))
            if group is None:
                fail(f"{run['run']}: DomainBed has no group for {algorithm}")
            accs = IID.hparams_accs(group)
            if len(accs) != 1:
                fail(f"{run['run']}: {len(accs)} hparams configurations for {algorithm}, 1 expected")
            chosen = accs[0][0]
            if IID.sweep_acc(group) != chosen["test_acc"]:
                fail(f"{run['run']}: sweep_acc is not the run's selection")
            close = lambda a, b: abs(a - b) <= 1e-12
            if not (close(chosen["test_acc"], test_acc) and close(chosen["val_acc"], val_acc)):
                fail(f"{run['run']} ({algorithm}): DomainBed selects test {chosen['test_acc']!r} / val "
                     f"{chosen['val_acc']!r}, distill report {test_acc!r} / {val_acc!r}")
            if step is not None:
                # The record DomainBed's argmax returned: the first whose step accuracies are the maximum.
                test_records = model_selection.get_test_records(group)
                steps = [r["step"] for r in test_records if IID._step_acc(r) == chosen]
                if steps[0] != step:
                    fail(f"{run['run']} ({algorithm}): DomainBed selects step {steps[0]}, distill report {step}")
            checked += 1

    # 3. The printed table of the training-domain validation method against report.md, mean by mean.
    table = printed.split(f"Dataset: {dataset}, model selection method: {IID.name}")[1]
    table = table.split("--------")[0]
    ours = report_md_means(os.path.join(folder, "report.md"), len(domains))
    rows = 0
    for algorithm, means in ours.items():
        line = next((l for l in table.splitlines() if l.startswith(algorithm[:20].ljust(20))), None)
        if line is None:
            fail(f"collect_results printed no row {algorithm!r}:\n{table}")
        cells = re.findall(r"(-?\d+\.\d) \+/- \d+\.\d", line)
        if len(cells) != len(domains) or any(abs(float(a) - b) > 0.1 + 1e-9 for a, b in zip(cells, means)):
            fail(f"row {algorithm}: collect_results printed {cells}, report.md {means}")
        rows += 1
    print(f"domainbed-check: collect_results read {total} records of {len(runs)} runs; its training-domain "
          f"validation selection equals distill report's for {checked} (run, algorithm) pairs; its table "
          f"matches report.md's {rows} rows")


def open_lines(view):
    for entry in os.listdir(view):
        path = os.path.join(view, entry, "results.jsonl")
        if os.path.isfile(path):
            with open(path) as f:
                yield from (l for l in f if l.strip())


def report_md_means(path, n_domains):
    """Per row of report.md, the mean of each held-out domain's cell (percent)."""
    means = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != n_domains + 3 or cells[0] in ("algorithm", "---"):
                continue
            means[cells[0]] = [float(c.split(" ")[0]) for c in cells[1:1 + n_domains]]
    if not means:
        fail(f"{path} has no rows")
    return means


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail("usage: check_collect_results.py RUNS/DATASET")
    np.set_printoptions(suppress=True)
    main(sys.argv[1])
