"""Build-side benchmark: peak memory vs number of volumes, and serial vs parallel wall time.

Generates N synthetic CT volumes (int16 HU, 256 x 256 x 64, 0.8 x 0.8 x 2.5 mm) with ellipsoid
"liver", "spleen" and "kidney" masks in an MSD layout, builds them with ``gmai-build`` in a fresh
process per measurement and prints peak RSS (ru_maxrss of that process) and wall time. Peak memory
must not grow with N (items are processed one at a time, workers write PNGs to disk), and
parallel workers should cut wall time. Ratios are measured within one run (machines are noisy).

    python bench/build_memory.py            # N = 4 and N = 32, workers 1 and 2
    python bench/build_memory.py --small 2 --large 8 --shape 512 512 160   # large CTs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

SHAPE = (256, 256, 64)  # --shape X Y Z overrides


def make_dataset(root: Path, n: int, shape: tuple[int, int, int] = SHAPE) -> None:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    sx, sy, sz = shape[0] / 256, shape[1] / 256, shape[2] / 64
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    training = []
    for k in range(n):
        img = rng.normal(40, 20, shape).astype(np.int16)
        lab = np.zeros(shape, np.uint8)
        for value, (cx, cy, r) in enumerate([(80, 120, 45), (180, 130, 25), (170, 170, 18)], 1):
            cx += int(rng.integers(-5, 6))
            inside = (((x - cx * sx) / (r * sx)) ** 2 + ((y - cy * sy) / (r * sy)) ** 2
                      + ((z - 32 * sz) / (20 * sz)) ** 2 < 1)
            lab[inside] = value
            img[inside] += 60 + 10 * value
        name = f"case_{k:03d}.nii.gz"
        nib.save(nib.Nifti1Image(img, affine), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(lab, affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "synthetic", "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"},
        "training": training,
    }))


def write_config(folder: Path, data: Path) -> Path:
    (folder / "map.yaml").write_text("labels: {liver: liver, spleen: spleen, kidney: kidney}\n")
    cfg = folder / "sources.yaml"
    cfg.write_text(yaml.safe_dump({
        "build": {"name": "BENCH", "per_label_cap": 1000},
        "sources": [{"name": "synthetic", "format": "msd", "root": str(data), "modality": "CT",
                     "label_map": "map.yaml", "license": "synthetic", "citation": "bench",
                     "slicing": {"per_label": 3}}],
    }))
    return cfg


def measure(cfg: Path, out: Path, workers: int) -> tuple[float, float]:
    """(peak RSS MiB of the build process incl. its workers, wall seconds)."""
    code = (
        "import resource, sys\n"
        "from gmai_build.cli import main\n"
        f"rc = main(['--sources', {str(cfg)!r}, '--out', {str(out)!r}, '--workers', '{workers}',"
        " '--no-progress'])\n"
        "self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print('RSS', max(self_kb, kids_kb), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    rss_kb = int(next(line for line in proc.stderr.splitlines() if line.startswith("RSS")).split()[1])
    return rss_kb / 1024, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=4)
    ap.add_argument("--large", type=int, default=32)
    ap.add_argument("--shape", type=int, nargs=3, default=list(SHAPE), metavar=("X", "Y", "Z"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        results = {}
        for n in (args.small, args.large):
            data = tmp_path / f"data{n}"
            make_dataset(data, n, tuple(args.shape))
            cfg = write_config(tmp_path, data)
            for workers in (1, 2):
                rss, wall = measure(cfg, tmp_path / f"out{n}_{workers}", workers)
                results[(n, workers)] = (rss, wall)
                print(f"N={n:3d} volumes  workers={workers}  peak RSS {rss:7.1f} MiB  "
                      f"wall {wall:6.1f} s")
        s, big = args.small, args.large
        print(f"peak RSS ratio N={big} / N={s} (workers=1): "
              f"{results[(big, 1)][0] / results[(s, 1)][0]:.2f}  (volumes x{big / s:.0f})")
        print(f"wall-time speed-up workers=2 vs 1 at N={big}: "
              f"{results[(big, 1)][1] / results[(big, 2)][1]:.2f}x")


if __name__ == "__main__":
    main()
