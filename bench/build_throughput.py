"""Build throughput against the codec floor, worker scaling, memory at two scales, cache, Ray.

A script, not a test (timings belong in benchmarks, measured within one run). It generates a
corpus of realistic content, ``--scale`` times the one of issue 10:

* ``derm``: 1,000 textured 512x512 RGB PNGs in 5 class folders (``folder_per_class``);
* ``ct``: 10 CT-like 512x512xDEPTH int16 ``.nii.gz`` volumes (body, noise, 2-3 organ
  ellipsoids: liver, spleen, kidney) with their label volumes in an MSD layout (``msd``);
* ``cells``: 300 512x512 JPEG images with about 5.5 boxes each in Pascal VOC XML (``voc``);
* ``extra``: a small fourth source (20 PNGs, 2 classes), added for the rebuild measurement;

builds it with ``gmai-build`` in a fresh process per measurement, and prints, from repetitions
interleaved in one run (the machine's load changes over time, ratios within a run do not):

* build wall and CPU time (the whole process tree: the build and its workers) on 1 and 2
  workers, and the speed-up;
* the codec floor: decoding the same input files with the same libraries (Pillow for
  PNG/JPEG, nibabel for the whole NIfTI volumes) and encoding the same output images with the
  build's own ``cv2.imencode`` call and base64, timed around those calls only, in one process;
* the Ray executor (``--executor ray``) on a local Ray with 2 CPUs that this script starts once,
  before the timed runs (``ray.init(num_cpus=2)``; each build connects to it as a driver, as on
  a cluster, so Ray's own start-up is not timed), interleaved with the local runs: wall time,
  speed-up against 1 local worker, and whether its outputs are byte-identical (the CPU time of
  Ray's workers is not counted: they are Ray's processes, not the build's);
* peak RSS and PSS of the whole process tree at ``--scale`` and 4 x ``--scale`` (one worker);
* the rebuild after adding one source (the per-source cache, when gmai-build has ``--no-cache``);

and the ratios against the targets of issue 10. ``--png-levels`` adds the size/time table of
the PNG compression levels on the build's own output images; ``--profile`` prints a cProfile of
a one-worker build.

    python bench/build_throughput.py --scale 0.1            # about two minutes on 2 cores
    python bench/build_throughput.py --scale 1 --reps 3     # the issue's corpus (546 MiB)
    python bench/build_throughput.py --scale 0.1 --png-levels --profile 25 --work /tmp/tp
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import csv
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["actinic keratosis", "atypical nevus", "basal cell carcinoma", "benign keratosis",
           "benign melanoma"]
ORGANS = {1: "liver", 2: "spleen", 3: "kidney"}
CELLS = ["RBC", "WBC", "Platelets"]
TARGETS = {"floor": 1.3, "speedup": 1.8, "rss_mb": 1536.0, "rss_growth": 1.10, "rebuild": 5.0}


# Corpus ----------------------------------------------------------------------------------------
def _texture(rng: np.random.Generator, cls: int, side: int = 512) -> np.ndarray:
    """Smooth colour blobs, a class-dependent ring pattern and sensor noise (compresses ~like a
    photograph: 0.4-0.7 bytes per byte with PNG)."""
    low = rng.uniform(40, 220, (16, 16, 3)).astype(np.float32)
    img = cv2.resize(low, (side, side), interpolation=cv2.INTER_CUBIC)
    y, x = np.mgrid[:side, :side].astype(np.float32)
    cx, cy = rng.uniform(side * 0.3, side * 0.7, 2)
    ring = 25 * np.sin(np.hypot(x - cx, y - cy) / (4 + 3 * cls))
    img += ring[..., None] + rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _ct_volume(rng: np.random.Generator, depth: int, n_organs: int) -> tuple[np.ndarray, np.ndarray]:
    """int16 HU volume (air, body, fat rim, noise) and a uint8 label volume with organ ellipsoids."""
    side = 512
    x, y = np.ogrid[:side, :side]
    body2d = ((x - 256) / 220.0) ** 2 + ((y - 256) / 170.0) ** 2 < 1
    img = np.full((side, side, depth), -1000, np.int16)
    lab = np.zeros((side, side, depth), np.uint8)
    noise = rng.normal(0, 18, (side, side)).astype(np.int16)
    z = np.arange(depth)
    organs = [(1, 200, 230, 70, 60), (2, 330, 200, 35, 50), (3, 300, 320, 28, 30)][:n_organs]
    for k in range(depth):
        plane = np.where(body2d, 40, -1000).astype(np.int16)
        plane[body2d] += np.roll(noise, k * 7, axis=0)[body2d]
        for value, cx, cy, r, hu in organs:
            dz = (z[k] - depth / 2) / (depth * 0.3)
            rr = r * max(0.0, 1 - dz * dz) ** 0.5
            if rr < 2:
                continue
            inside = ((x - cx) / rr) ** 2 + ((y - cy) / (rr * 0.8)) ** 2 < 1
            lab[:, :, k][inside] = value
            plane[inside] += hu
        img[:, :, k] = plane
    return img, lab


def make_corpus(root: Path, scale: float, depth: int, seed: int = 0) -> dict[str, int]:
    """Write the four sources under ``root`` (skipped when ``root/done.json`` already exists)."""
    import nibabel as nib

    done = root / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    rng = np.random.default_rng(seed)
    n_png, n_vol = max(5, round(1000 * scale)), max(1, round(10 * scale))
    n_voc, n_extra = max(2, round(300 * scale)), max(4, round(20 * scale))
    for folder, n, classes in (("derm", n_png, CLASSES), ("extra", n_extra, CLASSES[:2])):
        for i in range(n):
            cls = i % len(classes)
            path = root / folder / classes[cls] / f"img{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), _texture(rng, cls))
    ct = root / "ct"
    (ct / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ct / "labelsTr").mkdir(exist_ok=True)
    training = []
    for i in range(n_vol):
        img, lab = _ct_volume(rng, depth, 2 + i % 2)
        affine = np.diag([0.75, 0.75, 2.5, 1.0])
        name = f"ct_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(img, affine), ct / "imagesTr" / name)
        nib.save(nib.Nifti1Image(lab, affine), ct / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (ct / "dataset.json").write_text(json.dumps({
        "name": "ct-like", "modality": {"0": "CT"}, "training": training,
        "labels": {"0": "background", **{str(k): v for k, v in ORGANS.items()}}}))
    cells = root / "cells"
    (cells / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (cells / "Annotations").mkdir(exist_ok=True)
    n_boxes = 0
    for i in range(n_voc):
        img = _texture(rng, 5)
        objects = []
        for _ in range(int(rng.integers(3, 9))):  # mean 5.5 boxes per image
            w, h = (int(v) for v in rng.integers(20, 90, 2))
            x0, y0 = int(rng.integers(1, 512 - w)), int(rng.integers(1, 512 - h))
            cv2.ellipse(img, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), 0, 0, 360,
                        (150, 60, 170), -1)
            objects.append(
                f"<object><name>{CELLS[int(rng.integers(0, 3))]}</name><difficult>0</difficult>"
                f"<bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x0 + w}</xmax>"
                f"<ymax>{y0 + h}</ymax></bndbox></object>")
        n_boxes += len(objects)
        name = f"cells_{i:05d}"
        cv2.imwrite(str(cells / "JPEGImages" / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        (cells / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>512</width>"
            f"<height>512</height><depth>3</depth></size>{''.join(objects)}</annotation>")
    counts = {"png": n_png, "volumes": n_vol, "voc_images": n_voc, "boxes": n_boxes,
              "extra_png": n_extra,
              "bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file())}
    done.write_text(json.dumps(counts))
    return counts


def write_config(root: Path, with_extra: bool) -> Path:
    """sources.yaml for the corpus (every case a question: the cap is set out of the way)."""
    maps = root / "maps"
    maps.mkdir(exist_ok=True)
    (maps / "derm.yaml").write_text("labels:\n" + "".join(f"  {c}: {c}\n" for c in CLASSES))
    (maps / "ct.yaml").write_text("labels:\n" + "".join(f"  {o}: {o}\n" for o in ORGANS.values()))
    (maps / "cells.yaml").write_text("department: Hematology\nlabels:\n  RBC: red blood cell\n"
                                     "  WBC: white blood cell\n  Platelets: platelet\n")

    def source(name: str, fmt: str, folder: str, modality: str, label_map: str, **extra) -> str:
        lines = [f"  - name: {name}", f"    format: {fmt}", f"    root: {root / folder}",
                 f"    modality: {modality}", f"    label_map: {maps / label_map}",
                 "    license: synthetic", "    citation: gmai-build bench",
                 "    identifying_paths: false"]  # synthetic: the floor reads build.json's paths
        lines += [f"    {k}: {v}" for k, v in extra.items()]
        return "\n".join(lines) + "\n"

    text = ("build:\n  name: TP\n  seed: 0\n  per_label_cap: 1000000\nsources:\n"
            + source("derm", "folder_per_class", "derm", "Dermoscopy", "derm.yaml")
            + source("ct", "msd", "ct", "CT", "ct.yaml", slicing="{per_label: 3}")
            + source("cells", "voc", "cells", "Microscopy", "cells.yaml"))
    if with_extra:
        text += source("extra", "folder_per_class", "extra", "Dermoscopy", "derm.yaml")
    path = root / ("sources_extra.yaml" if with_extra else "sources.yaml")
    path.write_text(text)
    return path


# Measuring a process tree ----------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/*/stat parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _rss_pss_mb(pids: list[int]) -> tuple[float, float]:
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    extra: dict = field(default_factory=dict)


def run_tree(cmd: list[str], sample_memory: bool = False) -> Run:
    """Run ``cmd``; wall time, CPU time of it and its waited-for descendants (wait4), and the
    peak RSS/PSS summed over its process tree (sampled every 50 ms)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        peak = [0.0, 0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                rss, pss = _rss_pss_mb(_tree(proc.pid))
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)

        sampler = threading.Thread(target=sample, daemon=True)
        if sample_memory:
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        stop.set()
        if sample_memory:
            sampler.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{stderr.decode()[-3000:]}")
    run = Run(wall, usage.ru_utime + usage.ru_stime, peak[0], peak[1])
    if stdout.strip().startswith(b"{"):
        run.extra = json.loads(stdout)
    return run


def build_cmd(cfg: Path, out: Path, workers: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gmai_build.cli", "--sources", str(cfg), "--out", str(out),
            "--workers", str(workers), "--no-progress", "-q", *extra]


def cold_build(cfg: Path, out: Path, workers: int, memory: bool = False, *extra: str) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    return run_tree(build_cmd(cfg, out, workers, *extra), memory)


def build_help() -> str:
    return subprocess.run([sys.executable, "-m", "gmai_build.cli", "--help"],
                          capture_output=True, text=True).stdout


# The codec floor -------------------------------------------------------------------------------
def png_params() -> list[int]:
    """The build's own cv2.imencode parameters (``render.PNG_PARAMS`` when it declares them)."""
    from gmai_build import render

    return list(getattr(render, "PNG_PARAMS", []))


def output_images(out: Path, decode: bool = True):
    """BGR arrays (or (modality, base64 text)) of every output image of a build."""
    csv.field_size_limit(1 << 30)
    for tsv in sorted(out.glob("*.tsv")):
        with open(tsv, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if not row.get("image"):
                    continue
                if not decode:
                    yield row["modality"], row["image"]
                    continue
                data = np.frombuffer(base64.b64decode(row["image"]), np.uint8)
                yield cv2.imdecode(data, cv2.IMREAD_COLOR)


def floor_main(out: Path) -> None:
    """Child process: decode the build's inputs, encode its outputs; print seconds as JSON."""
    import nibabel as nib
    from PIL import Image

    info = json.loads((out / "build.json").read_text())
    cfg = {s["name"]: s for s in info["sources"]}
    roots = json.loads(os.environ["TP_ROOTS"])
    files = [Path(roots[src]) / rel for src in sorted(info["input_sha256"]) if src in cfg
             for rel in sorted(info["input_sha256"][src])]
    params = png_params()
    decode = encode = 0.0
    cpu0 = time.process_time()
    for path in files:
        if path.name.endswith((".nii.gz", ".nii")):
            t = time.perf_counter()
            np.asanyarray(nib.load(str(path)).dataobj)
            decode += time.perf_counter() - t
        elif path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            t = time.perf_counter()
            with Image.open(path) as img:
                img.load()
                np.asarray(img)
            decode += time.perf_counter() - t
    n = 0
    cpu_codec = time.process_time() - cpu0
    for bgr in output_images(out):
        c = time.process_time()
        t = time.perf_counter()
        ok, buf = cv2.imencode(".png", bgr, params)
        base64.b64encode(buf.tobytes()).decode("ascii")
        encode += time.perf_counter() - t
        cpu_codec += time.process_time() - c
        n += 1
    print(json.dumps({"decode": decode, "encode": encode, "floor_wall": decode + encode,
                      "floor_cpu": cpu_codec, "inputs": len(files), "images": n}))


def png_levels(out: Path, limit: int) -> None:
    """Size and encode time of output images at OpenCV's default and explicit zlib levels,
    per modality (up to ``limit`` images each): the table behind ``render.PNG_PARAMS``."""
    by_modality: dict[str, list[str]] = {}
    for modality, text in output_images(out, decode=False):
        by_modality.setdefault(modality, []).append(text)
    settings = [("default (level 1, RLE)", [])] + [
        (f"level {k}", [cv2.IMWRITE_PNG_COMPRESSION, k]) for k in (1, 2, 3, 4, 6, 9)]
    print("\nPNG compression of the build's output images, 3 interleaved repetitions, median "
          "(size and time relative to the default):")
    for modality, texts in sorted(by_modality.items()):
        step = max(1, len(texts) // limit)
        images = [cv2.imdecode(np.frombuffer(base64.b64decode(t), np.uint8), cv2.IMREAD_COLOR)
                  for t in texts[::step][:limit]]
        times: dict[str, list[float]] = {name: [] for name, _ in settings}
        sizes: dict[str, int] = {}
        for _ in range(3):
            for name, params in settings:
                t = time.process_time()
                sizes[name] = sum(len(cv2.imencode(".png", img, params)[1]) for img in images)
                times[name].append(time.process_time() - t)
        base_t, base_s = statistics.median(times[settings[0][0]]), sizes[settings[0][0]]
        print(f"  {modality} ({len(images)} images, {images[0].shape[1]}x{images[0].shape[0]})")
        print(f"    {'setting':24s} {'KiB/image':>10s} {'size':>6s} {'ms/image':>9s} {'time':>6s}")
        for name, _ in settings:
            t = statistics.median(times[name])
            print(f"    {name:24s} {sizes[name] / len(images) / 1024:10.0f} "
                  f"{sizes[name] / base_s:6.2f} {1000 * t / len(images):9.1f} {t / base_t:6.2f}")


# Main ------------------------------------------------------------------------------------------
def _med(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def _verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--floor-child":
        floor_main(Path(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="corpus size; 1 = the issue's")
    ap.add_argument("--depth", type=int, default=100, help="slices per CT volume")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--work", type=Path, help="keep corpora and outputs here (reused)")
    ap.add_argument("--no-rss", action="store_true", help="skip the 4 x scale memory runs")
    ap.add_argument("--no-rebuild", action="store_true", help="skip the add-one-source rebuild")
    ap.add_argument("--rss-workers", type=int, nargs="+", default=[1], metavar="N",
                    help="worker counts of the memory runs (default: 1, the driver alone)")
    ap.add_argument("--no-ray", action="store_true",
                    help="skip the Ray executor (measured when Ray is installed)")
    ap.add_argument("--png-levels", type=int, default=0, metavar="N",
                    help="PNG level table on N output images")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="cProfile a one-worker build in this process; print the top N")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="gmai-tp-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run_all(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def run_all(args: argparse.Namespace, work: Path) -> None:
    corpus = work / f"corpus-{args.scale:g}-{args.depth}"
    t = time.perf_counter()
    counts = make_corpus(corpus, args.scale, args.depth)
    print(f"corpus scale {args.scale:g}: {counts['png']} PNGs, {counts['volumes']} volumes "
          f"512x512x{args.depth}, {counts['voc_images']} VOC images with {counts['boxes']} boxes,"
          f" {counts['bytes'] / 2**20:.0f} MiB ({time.perf_counter() - t:.0f} s to make or find)")
    cfg = write_config(corpus, with_extra=False)
    os.environ["TP_ROOTS"] = json.dumps({n: str(corpus / n) for n in ("derm", "ct", "cells", "extra")})

    if args.profile:
        profile_build(cfg, work / "out-profile", args.profile)

    help_text = build_help()
    if args.reps:
        ray_address = start_local_ray(help_text) if not args.no_ray else None
        try:
            measure_builds(args, work, cfg, ray_address)
        finally:
            if ray_address:
                import ray

                ray.shutdown()
    if not args.no_rss:
        measure_memory(args, work, corpus)
    if not args.no_rebuild:
        measure_rebuild(args, work, corpus, cfg, "--no-cache" in help_text)
    if args.png_levels:
        if not (work / "out-w1" / "build.json").is_file():
            cold_build(cfg, work / "out-w1", 1)
        png_levels(work / "out-w1", args.png_levels)


def start_local_ray(help_text: str) -> str | None:
    """Start a local Ray with 2 CPUs in this process; the address the builds connect to, or
    None (saying why) where gmai-build has no --executor or Ray is not installed."""
    if "--executor" not in help_text:
        print("Ray executor: not measured (gmai-build has no --executor)")
        return None
    try:
        import ray
    except ImportError:
        print("Ray executor: not measured (Ray is not installed: pip install 'gmai-build[ray]')")
        return None
    import logging

    logging.getLogger("ray").setLevel(logging.ERROR)  # (its notices would interleave the table)
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                       configure_logging=False)
    return context.address_info["gcs_address"]


def _same_outputs(a: Path, b: Path) -> bool:
    """Every published file of two builds is the same bytes."""
    names = sorted(p.name for p in a.iterdir() if p.is_file() and not p.name.startswith("."))
    return bool(names) and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def measure_builds(args: argparse.Namespace, work: Path, cfg: Path,
                   ray_address: str | None = None) -> None:
    """1 and 2 workers, the Ray executor (when ``ray_address``) and the codec floor,
    interleaved; medians and ratios."""
    runs: dict[str, list[Run]] = {"w1": [], "w2": [], "ray": [], "floor": []}
    for rep in range(args.reps):
        runs["w1"].append(cold_build(cfg, work / "out-w1", 1))
        runs["w2"].append(cold_build(cfg, work / "out-w2", 2))
        if ray_address:
            runs["ray"].append(cold_build(cfg, work / "out-ray", 2, False, "--executor", "ray",
                                          "--ray-address", ray_address))
        floor = run_tree([sys.executable, __file__, "--floor-child", str(work / "out-w1")])
        runs["floor"].append(floor)
        on_ray = f" | Ray {runs['ray'][-1].wall:6.1f} s wall" if ray_address else ""
        print(f"  rep {rep + 1}: 1 worker {runs['w1'][-1].wall:6.1f} s wall "
              f"{runs['w1'][-1].cpu:6.1f} s CPU | 2 workers {runs['w2'][-1].wall:6.1f} s wall "
              f"{runs['w2'][-1].cpu:6.1f} s CPU{on_ray} | floor {floor.extra['floor_wall']:6.1f} s "
              f"(decode {floor.extra['decode']:.1f} + encode {floor.extra['encode']:.1f})")
    same = _same_outputs(work / "out-w1", work / "out-w2")
    n_q = json.loads((work / "out-w1" / "summary.json").read_text())["total"]
    w1, w2 = _med(runs["w1"], "wall"), _med(runs["w2"], "wall")
    c1, c2 = _med(runs["w1"], "cpu"), _med(runs["w2"], "cpu")
    floor_wall = statistics.median(r.extra["floor_wall"] for r in runs["floor"])
    floor_cpu = statistics.median(r.extra["floor_cpu"] for r in runs["floor"])
    speedups = [a.wall / b.wall for a, b in zip(runs["w1"], runs["w2"])]
    print(f"\n{n_q} questions; outputs of 1 and 2 workers byte-identical: {same}")
    print(f"build, 1 worker:   {w1:6.1f} s wall, {c1:6.1f} s CPU "
          f"({c1 / n_q * 1000:.1f} ms CPU per question)")
    print(f"build, 2 workers:  {w2:6.1f} s wall, {c2:6.1f} s CPU (CPU x{c2 / c1:.2f})")
    print(f"codec floor:       {floor_wall:6.1f} s wall, {floor_cpu:6.1f} s CPU "
          f"(PNG params {png_params() or 'OpenCV default'})")
    # On a machine busier than its cores, wall times measure the neighbours: judge by CPU.
    busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    ratio = c1 / floor_cpu if busy else w1 / floor_wall
    print(f"build / floor, 1 worker: {w1 / floor_wall:.2f} wall, {c1 / floor_cpu:.2f} CPU "
          f"(target <= {TARGETS['floor']}, judged on {'CPU: load average ' if busy else 'wall'}"
          f"{f'{os.getloadavg()[0]:.1f} > {os.cpu_count()} cores' if busy else ''}: "
          f"{_verdict(ratio <= TARGETS['floor'])})")
    print(f"speed-up on 2 workers: median {statistics.median(speedups):.2f}x, best "
          f"{max(speedups):.2f}x (target >= {TARGETS['speedup']}x: "
          f"{_verdict(statistics.median(speedups) >= TARGETS['speedup'])})")
    if ray_address:
        on_ray = [a.wall / b.wall for a, b in zip(runs["w1"], runs["ray"])]
        print(f"Ray executor (local Ray, 2 CPUs, started once): {_med(runs['ray'], 'wall'):6.1f} s "
              f"wall; speed-up vs 1 worker: median {statistics.median(on_ray):.2f}x, best "
              f"{max(on_ray):.2f}x; outputs byte-identical to 1 worker: "
              f"{_same_outputs(work / 'out-w1', work / 'out-ray')}")


def measure_memory(args: argparse.Namespace, work: Path, corpus: Path) -> None:
    big = work / f"corpus-{4 * args.scale:g}-{args.depth}"
    counts = make_corpus(big, 4 * args.scale, args.depth)
    big_cfg = write_config(big, with_extra=False)
    small_cfg = corpus / "sources.yaml"
    for workers in args.rss_workers:
        peaks: dict[str, list[Run]] = {"small": [], "big": []}
        for _ in range(max(1, args.reps - 1)):
            peaks["small"].append(cold_build(small_cfg, work / "out-rss", workers, True))
            peaks["big"].append(cold_build(big_cfg, work / "out-rss", workers, True))
        _print_memory(args, counts, peaks, workers)


def _print_memory(args: argparse.Namespace, counts: dict[str, int], peaks: dict[str, list[Run]],
                  workers: int) -> None:
    rs, rb = _med(peaks["small"], "rss_mb"), _med(peaks["big"], "rss_mb")
    ps, pb = _med(peaks["small"], "pss_mb"), _med(peaks["big"], "pss_mb")
    print(f"peak memory of the process tree, {workers} worker(s): scale {args.scale:g} RSS {rs:.0f} MB "
          f"(PSS {ps:.0f}), scale {4 * args.scale:g} ({counts['bytes'] / 2**20:.0f} MiB in) "
          f"RSS {rb:.0f} MB (PSS {pb:.0f}); growth x{rb / rs:.2f} (target <= "
          f"{TARGETS['rss_growth']} and <= {TARGETS['rss_mb']:.0f} MB: "
          f"{_verdict(rb / rs <= TARGETS['rss_growth'] and rb <= TARGETS['rss_mb'])})")


def measure_rebuild(args: argparse.Namespace, work: Path, corpus: Path, cfg: Path,
                    has_cache: bool) -> None:
    """Cold build of three sources, then the same output folder rebuilt with a fourth added."""
    extra_cfg = write_config(corpus, with_extra=True)
    cold, warm = [], []
    for _ in range(max(1, args.reps - 1)):
        cold.append(cold_build(cfg, work / "out-rebuild", 1))
        warm.append(run_tree(build_cmd(extra_cfg, work / "out-rebuild", 1)))
    ratio = _med(cold, "wall") / _med(warm, "wall")
    what = ("per-source cache" if has_cache else
            "per-source cache: not available yet (no --no-cache); today's incremental rebuild")
    print(f"{what}: cold {_med(cold, 'wall'):.1f} s, rebuild after adding one source "
          f"{_med(warm, 'wall'):.1f} s: {ratio:.2f}x faster (target >= {TARGETS['rebuild']}x: "
          f"{_verdict(ratio >= TARGETS['rebuild'])})")


def profile_build(cfg: Path, out: Path, top: int) -> None:
    from gmai_build.config import load_config
    from gmai_build.pipeline import build

    shutil.rmtree(out, ignore_errors=True)
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    build(load_config(cfg), out, workers=1, progress=False, log=lambda _: None)
    prof.disable()
    print(f"\ncProfile of a one-worker build ({time.perf_counter() - t:.1f} s under the profiler):")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    print("\n".join(line for line in buf.getvalue().splitlines()[6:] if line.strip()))


if __name__ == "__main__":
    main()
