#!/usr/bin/env python3
"""Download a DomainBed benchmark into data/<folder>/<domain>/<class>/<image>, as DomainBed's own
download script lays it out (same sources), so `embed --dataset NAME` finds it.

    python3 data/download.py pacs            # or: make data DATASET=pacs
    python3 data/download.py all --data-dir /big/disk/data

Google Drive sources (PACS, VLCS, OfficeHome) need `pip install gdown`; the others use the standard library.
Downloads go to a temporary name and the dataset folder appears only when complete: a rerun after an
interruption starts the missing dataset again and skips finished ones.
"""
import argparse
import json
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

DRIVE = "https://drive.google.com/uc?id="
DOMAINNET = "http://csr.bu.edu/ftp/visda/2019/multi-source/"
DOMAINNET_DUPLICATES = (
    "https://raw.githubusercontent.com/facebookresearch/DomainBed/main/domainbed/misc/domain_net_duplicates.txt"
)
TERRA = "https://lilablobssc.blob.core.windows.net/caltechcameratraps/"
TERRA_LOCATIONS = ["38", "46", "100", "43"]
TERRA_CATEGORIES = ["bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit", "raccoon", "squirrel"]

FOLDERS = {
    "pacs": "PACS",
    "vlcs": "VLCS",
    "officehome": "office_home",
    "terraincognita": "terra_incognita",
    "domainnet": "domain_net",
}


def fetch(url, dst):
    """Download url to dst (through a temporary name)."""
    print(f"downloading {url}", file=sys.stderr)
    part = dst.with_name(dst.name + ".part")
    if url.startswith(DRIVE):
        try:
            import gdown
        except ImportError:
            sys.exit(f"error: {url} is on Google Drive: pip install gdown, then run again")
        if gdown.download(url, str(part), quiet=False) is None:
            sys.exit(f"error: could not download {url}")
    else:
        with urllib.request.urlopen(url) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    part.rename(dst)
    return dst


def extract(archive, into):
    print(f"extracting {archive.name}", file=sys.stderr)
    if archive.name.endswith((".tar.gz", ".tar")):
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    elif archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into)
    else:
        raise ValueError(f"unknown archive type: {archive}")
    archive.unlink()


def pacs(work):
    extract(fetch(DRIVE + "1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd", work / "PACS.zip"), work)
    return work / "kfold"


def vlcs(work):
    extract(fetch(DRIVE + "1skwblH1_okBwxWxmRsp9_qi15hyPpxg8", work / "VLCS.tar.gz"), work)
    return work / "VLCS"


def officehome(work):
    extract(fetch(DRIVE + "1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC", work / "office_home.zip"), work)
    return work / "OfficeHomeDataset_10072016"


def domainnet(work):
    out = work / "domain_net"
    out.mkdir()
    for name in ["groundtruth/clipart.zip", "infograph.zip", "groundtruth/painting.zip", "quickdraw.zip",
                 "real.zip", "sketch.zip"]:
        extract(fetch(DOMAINNET + name, out / name.split("/")[-1]), out)
    # DomainBed removes the images that appear in more than one domain.
    duplicates = fetch(DOMAINNET_DUPLICATES, work / "duplicates.txt").read_text().split()
    for rel in duplicates:
        (out / rel).unlink(missing_ok=True)
    return out


def terraincognita(work):
    """DomainBed's selection: four camera locations, ten categories, copied into location_<id>/<category>/."""
    extract(fetch(TERRA + "eccv_18_all_images_sm.tar.gz", work / "images.tar.gz"), work)
    extract(fetch(TERRA + "labels/caltech_camera_traps.json.zip", work / "labels.json.zip"), work)
    annotations = json.loads(next(work.glob("caltech_images_*.json")).read_text())
    return organise_terra(annotations, work / "eccv_18_all_images_sm", work / "terra_incognita")


def organise_terra(annotations, images, out):
    categories = {c["id"]: c["name"] for c in annotations["categories"]}
    labels = {}
    for a in annotations["annotations"]:
        labels.setdefault(a["image_id"], []).append(categories[a["category_id"]])
    for image in annotations["images"]:
        location = str(image["location"])
        if location not in TERRA_LOCATIONS:
            continue
        for category in labels.get(image["id"], []):
            if category in TERRA_CATEGORIES:
                folder = out / f"location_{location}" / category
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(images / image["file_name"], folder / image["file_name"])
    return out


def download(name, data_dir):
    target = data_dir / FOLDERS[name]
    if target.exists():
        print(f"{target} exists; skipping {name}", file=sys.stderr)
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=data_dir) as tmp:
        built = globals()[name](Path(tmp))
        built.rename(target)
    print(target)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=[*FOLDERS, "all"])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    for name in FOLDERS if args.dataset == "all" else [args.dataset]:
        download(name, args.data_dir)


if __name__ == "__main__":
    main()
