#!/usr/bin/env python3
"""Opens every vl2v cache found under the given directories with pyarrow, polars and DuckDB, runs one real
query on each of its tables, and checks that the readers agree with each other and with the manifest.

For `images/part-*.parquet` (all parts of a cache read together), grouped by `domain`, and for
`texts.parquet`, grouped by `label`: the row count, the mean of the first embedding component, and the
mean squared L2 norm of the embeddings (which decodes every value of the column). Exits non-zero on any
failure: a reader that cannot open a file, or that disagrees with the others.

Usage: check_readers.py DIR... (each DIR a cache, or a directory holding caches at any depth)
"""

import glob
import json
import math
import os
import sys
import traceback

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# f16 values are widened exactly, and every reader sums in float64: only the summation order differs.
REL_TOL = 1e-9
ABS_TOL = 1e-12


def query_pyarrow(files, key):
    table = pa.concat_tables(pq.read_table(f) for f in files)
    emb = table.column("embedding").combine_chunks()
    keys = table.column(key).combine_chunks()
    first = pc.cast(pc.list_element(emb, 0), pa.float64())
    values = pc.cast(pc.list_flatten(emb), pa.float64())
    value_keys = pc.take(keys, pc.list_parent_indices(emb))
    per_row = pa.table({"k": keys, "first": first}).group_by("k").aggregate(
        [("k", "count"), ("first", "mean")]
    )
    squares = pa.table({"k": value_keys, "sq": pc.multiply(values, values)})
    per_value = squares.group_by("k").aggregate([("sq", "sum")])
    sq_sums = dict(zip(per_value.column("k").to_pylist(), per_value.column("sq_sum").to_pylist()))
    out = {}
    for k, n, mean in zip(
        per_row.column("k").to_pylist(),
        per_row.column("k_count").to_pylist(),
        per_row.column("first_mean").to_pylist(),
    ):
        out[str(k)] = (n, mean, sq_sums[k] / n)
    return out


def query_polars(files, key):
    emb = pl.col("embedding")
    frame = (
        pl.scan_parquet(files)
        .group_by(key)
        .agg(
            pl.len().alias("n"),
            emb.arr.first().cast(pl.Float64).mean().alias("first"),
            (emb.arr.explode().cast(pl.Float64) ** 2).sum().alias("sq"),
        )
        .collect()
    )
    return {str(k): (n, first, sq / n) for k, n, first, sq in frame.iter_rows()}


def query_duckdb(files, key):
    con = duckdb.connect()
    rows = con.execute(
        f"""
        SELECT {key}, count(*), avg(embedding[1]::DOUBLE),
               sum(list_dot_product(embedding::DOUBLE[], embedding::DOUBLE[]))
        FROM read_parquet(?) GROUP BY {key}
        """,
        [files],
    ).fetchall()
    return {str(k): (n, first, sq / n) for k, n, first, sq in rows}


READERS = {"pyarrow": query_pyarrow, "polars": query_polars, "duckdb": query_duckdb}


def agree(a, b):
    if a.keys() != b.keys():
        return f"groups {sorted(a)} vs {sorted(b)}"
    for k in a:
        (na, fa, sa), (nb, fb, sb) = a[k], b[k]
        if na != nb:
            return f"{k}: {na} vs {nb} rows"
        for what, x, y in (("mean first component", fa, fb), ("mean squared norm", sa, sb)):
            if not math.isclose(x, y, rel_tol=REL_TOL, abs_tol=ABS_TOL):
                return f"{k}: {what} {x!r} vs {y!r}"
    return None


def encodings(path):
    meta = pq.ParquetFile(path).metadata
    seen = {}
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(g).column(c)
            seen.setdefault(col.path_in_schema, set()).update(col.encodings)
    return seen


def check_cache(cache):
    """Returns the list of failures for one cache directory."""
    failures = []
    manifest = json.load(open(os.path.join(cache, "manifest.json")))
    dtype = {"f32": pa.float32(), "f16": pa.float16()}[manifest["embedding_dtype"]]
    tables = [("images", sorted(glob.glob(os.path.join(cache, "images", "part-*.parquet"))), "domain")]
    if os.path.exists(os.path.join(cache, "texts.parquet")):
        tables.append(("texts", [os.path.join(cache, "texts.parquet")], "label"))
    print(f"{cache} ({manifest['encoder']['role']}, {manifest['embedding_dtype']})")
    for name, files, key in tables:
        if not files:
            failures.append(f"{cache}: no {name} files")
            continue
        schema = pq.read_schema(files[0])
        stored = schema.field("embedding").type.value_type
        if stored != dtype:
            failures.append(f"{cache}/{name}: embedding stored as {stored}, manifest says {dtype}")
        results = {}
        for reader, query in READERS.items():
            try:
                results[reader] = query(files, key)
            except Exception as e:  # noqa: BLE001: any reader error is a failure to report
                first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
                failures.append(f"{cache}/{name}: {reader} failed: {first_line}")
                traceback.print_exc(file=sys.stderr)
        reference = results.get("pyarrow")
        for reader, result in results.items():
            problem = agree(reference, result) if reference is not None else None
            if problem:
                failures.append(f"{cache}/{name}: {reader} disagrees with pyarrow: {problem}")
            status = "ok" if not problem else "DISAGREES"
            groups = ", ".join(f"{k}: {n} rows, e0 {f:+.6f}, |e|^2 {s:.4f}" for k, (n, f, s) in sorted(result.items()))
            print(f"  {name:6} {reader:8} {status}  {groups}")
        if name == "images" and reference is not None:
            counts, per_image = manifest["counts"], 1 + manifest["views"]["count"]
            expected = {d: n * per_image for d, n in counts["per_domain"].items() if n}
            actual = {d: n for d, (n, _, _) in reference.items()}
            if actual != expected or sum(actual.values()) != counts["rows"]:
                failures.append(f"{cache}/images: rows per domain {actual}, manifest says {expected}")
        seen = {}
        for f in files:
            for col, encs in encodings(f).items():
                seen.setdefault(col, set()).update(encs)
        print(f"  {name:6} encodings: " + "; ".join(f"{c} {'/'.join(sorted(e))}" for c, e in seen.items()))
    return failures


def main(argv):
    if not argv:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    caches = sorted(
        {os.path.dirname(m) for d in argv for m in glob.glob(os.path.join(d, "**", "manifest.json"), recursive=True)}
    )
    if not caches:
        print(f"no cache (manifest.json) under {' '.join(argv)}", file=sys.stderr)
        return 1
    print(f"pyarrow {pa.__version__}, polars {pl.__version__}, duckdb {duckdb.__version__}")
    failures = [f for cache in caches for f in check_cache(cache)]
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    print(f"{len(caches)} caches, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
