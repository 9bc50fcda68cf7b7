"""Peak memory of a gmai-eval run versus TSV size: streaming means it must not grow with the file.

Generates synthetic GMAI-MMBench TSVs of the requested sizes in a temporary folder (random-noise
PNGs, ~0.5 MB base64 each, like the published file's ~2 MB rows), then, for each size, runs the
full pipeline (read -> decode every image -> predict with the ``first`` baseline -> append
predictions -> score) in a fresh subprocess and reports its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and the ratio between sizes.

    python bench/eval_memory.py                 # 200 MB vs 2 GB (default)
    python bench/eval_memory.py --sizes-mb 50 500 --keep
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from gmai_eval.adapters import FirstBaseline
from gmai_eval.runner import best_records, predict, prediction_files
from gmai_eval.scoring import collect, write_scores

class DecodingFirst(FirstBaseline):
    # Decodes every image, as a real model would, then answers the first option.
    def predict(self, items, prompts):
        for item in items:
            item.image().load()
        return super().predict(items, prompts)

data, out = sys.argv[1], sys.argv[2]
t = time.monotonic()
d = predict(data, DecodingFirst(), out, chunksize=int(sys.argv[3]))
res = write_scores(collect(data, best_records(prediction_files(d))), d, "memory bench")
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_rss_mb": peak_kb / 1024, "n": res["n"], "seconds": time.monotonic() - t}))
"""


def noise_png_b64(seed: int, side: int = 360) -> str:
    """A random-noise PNG (incompressible, so its size is predictable)."""
    import cv2
    import numpy as np

    img = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return base64.b64encode(buf.tobytes()).decode("ascii")


def write_tsv(path: Path, size_mb: float) -> int:
    """Write a synthetic TSV of about ``size_mb`` MB; return the number of rows."""
    images = [noise_png_b64(s) for s in range(8)]
    header = ["index", "question", "A", "B", "C", "D", "E", "answer", "category",
              "clinical VQA task", "department", "perceptual granularity", "modality",
              "original task", "image"]
    target = size_mb * 1024 * 1024
    written, n = 0, 0
    with path.open("w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        while written < target:
            row = [str(n), f"Which organ is marked in image {n}?", "liver", "kidney",
                   "spleen", "", "", "ABC"[n % 3], "liver", "Organ Recognition - Abdomen",
                   "" if n % 5 == 0 else "Urology", "Mask Level", "CT", "SEG_2D",
                   images[n % len(images)]]
            line = "\t".join(row) + "\n"
            f.write(line)
            written += len(line)
            n += 1
    return n


def measure(data: Path, out: Path, chunksize: int) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(data), str(out), str(chunksize)],
                         check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[200, 2048])
    p.add_argument("--chunksize", type=int, default=32)
    p.add_argument("--dir", default=None, help="work folder (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated TSVs")
    args = p.parse_args()
    tmp = tempfile.TemporaryDirectory(dir=args.dir) if not args.keep else None
    root = Path(tmp.name) if tmp else Path(tempfile.mkdtemp(dir=args.dir))
    results = []
    try:
        for size in args.sizes_mb:
            data = root / f"synthetic_{int(size)}MB_VAL.tsv"
            t = time.monotonic()
            rows = write_tsv(data, size)
            gen = time.monotonic() - t
            r = measure(data, root / f"out_{int(size)}", args.chunksize)
            r.update(size_mb=data.stat().st_size / 2**20, rows=rows)
            results.append(r)
            print(f"{r['size_mb']:8.0f} MB TSV, {rows:6d} rows: peak RSS {r['peak_rss_mb']:7.1f}"
                  f" MB, eval {r['seconds']:.1f} s ({rows / r['seconds']:.0f} rows/s), "
                  f"generation {gen:.1f} s", flush=True)
            if tmp:
                data.unlink()
    finally:
        if tmp:
            tmp.cleanup()
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"file size ratio {b['size_mb'] / a['size_mb']:.1f}x -> peak RSS ratio "
              f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x (chunksize {args.chunksize})")


if __name__ == "__main__":
    main()
