"""distnet-data: pack data into the sharded format, describe a packed directory, verify its checksums.

    distnet-data pack --from-arrays x.npy y.npy OUT [--samples-per-shard 4096] [--row-align page]
    distnet-data pack --from-mnist train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz OUT
    distnet-data pack --from-csv data.csv --label-column -1 [--shape 28,28] [--dtype uint8] OUT
    distnet-data info DIR [--json]
    distnet-data verify DIR
"""
import argparse
import json
import math
import sys

import numpy as np

from . import pack
from .format import DataError, read_index
from .reader import verify_directory
from .writer import ShardWriter


def cmd_pack(args):
    if args.from_arrays:
        total, batches = pack.array_batches(*args.from_arrays, batch=args.samples_per_shard)
    elif args.from_mnist:
        total, batches = pack.mnist_batches(*args.from_mnist, batch=args.samples_per_shard)
    else:
        if args.label_column is None:
            raise ValueError("--from-csv needs --label-column K (the column of the labels; -1 for the last)")
        total, batches = pack.csv_batches(args.from_csv, args.label_column, batch=args.samples_per_shard,
                                          dtype=args.dtype, label_dtype=args.label_dtype, shape=args.shape,
                                          skip_rows=args.skip_rows)
    progress = pack.Progress(total)
    nbytes = 0
    with ShardWriter(args.out, samples_per_shard=args.samples_per_shard, overwrite=args.overwrite,
                     row_align=args.row_align) as w:
        for batch in batches:
            w.write(**batch)
            nbytes += sum(a.nbytes for a in batch.values())
            progress.update(w.count, nbytes)
    progress.finish()
    print(f"wrote {w.count:,} samples in {len(w.index['shards'])} shard(s) to {args.out}")
    return 0


def cmd_info(args):
    index = read_index(args.dir)
    if args.json:
        print(json.dumps(index, indent=1))
        return 0
    files = [e for s in index["shards"] for e in s["files"].values()]
    print(f"{args.dir}: {index['format']} version {index['version']}")
    print(f"  samples: {index['count']:,} in {len(index['shards'])} shard(s) of up to "
          f"{index['samples_per_shard']:,}")
    for f in index["fields"]:
        stride = f" (rows padded to {f['row_stride']} bytes)" if f.get("row_stride", 0) > np.dtype(
            f["dtype"]).itemsize * math.prod(f["shape"]) else ""
        print(f"  field {f['name']}: shape {tuple(f['shape'])}, dtype {f['dtype']}{stride}")
    print(f"  files: {len(files)}, {sum(e['bytes'] for e in files):,} bytes, checksums: {index['checksum']}")
    return 0


def cmd_verify(args):
    index = read_index(args.dir)
    progress = pack.Progress(sum(e["bytes"] for s in index["shards"] for e in s["files"].values()), "bytes")
    problems = verify_directory(args.dir, progress=lambda done, total: progress.update(done, done))
    progress.finish()
    for p in problems:
        print(f"distnet-data verify: {p}", file=sys.stderr)
    n = sum(len(s["files"]) for s in index["shards"])
    if problems:
        print(f"{args.dir}: {len(problems)} of {n} file(s) failed verification")
        return 1
    print(f"{args.dir}: all {n} file(s) match their size, header and CRC-32")
    return 0


def _shape(text):
    return tuple(_positive(d.strip()) for d in text.split(","))


def _align(text):
    return None if text == "none" else "page" if text == "page" else _positive(text)


def _positive(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, received {text!r}")
    return int(text)


def parser():
    p = argparse.ArgumentParser(prog="distnet-data", description="distnet's sharded data sets")
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack", help="pack arrays, MNIST IDX files or a CSV into a sharded directory")
    src = pk.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-arrays", nargs=2, metavar=("X_NPY", "Y_NPY"), help=".npy files (memory-mapped)")
    src.add_argument("--from-mnist", nargs=2, metavar=("IMAGES_IDX", "LABELS_IDX"), help="IDX files (.gz or raw)")
    src.add_argument("--from-csv", metavar="FILE", help="a numeric CSV (.gz or raw), one sample per line")
    pk.add_argument("out", metavar="OUT", help="the directory to create")
    pk.add_argument("--samples-per-shard", type=_positive, default=4096)
    pk.add_argument("--overwrite", action="store_true", help="replace a data set already in OUT")
    pk.add_argument("--row-align", type=_align, default=None, metavar="page|BYTES",
                    help="pad rows of at least half a page to whole pages (random reads then fetch 1.33x the "
                         "bytes of a 3072-byte image instead of 2x; costs up to 50%% more disk)")
    csv = pk.add_argument_group("CSV options")
    csv.add_argument("--label-column", type=int, default=None, help="column of y (negative: from the end)")
    csv.add_argument("--dtype", default="float32", help="dtype of x on disk (e.g. uint8 for pixels)")
    csv.add_argument("--label-dtype", default="int64", help="dtype of y on disk (float32 for regression)")
    csv.add_argument("--shape", type=_shape, default=None, help="shape of one sample of x, e.g. 28,28")
    csv.add_argument("--skip-rows", type=int, default=0, help="header lines to skip")
    inf = sub.add_parser("info", help="describe a sharded directory")
    inf.add_argument("dir", metavar="DIR")
    inf.add_argument("--json", action="store_true", help="print index.json as it is")
    ver = sub.add_parser("verify", help="check every file's size, .npy header and CRC-32")
    ver.add_argument("dir", metavar="DIR")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    try:
        return {"pack": cmd_pack, "info": cmd_info, "verify": cmd_verify}[args.command](args)
    except (DataError, ValueError, TypeError, OSError) as e:
        print(f"distnet-data {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
