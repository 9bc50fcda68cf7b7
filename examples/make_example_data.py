"""Regenerate the bundled example data in examples/data/ (committed; run only to change it).

Everything is derived from real public-domain (CC0) fundus images that ship inside
scikit-image (``pip install scikit-image``):

* ``skimage/data/retina.jpg``: "Fundus photograph of normal left eye" (M. Häggström, Wikimedia
  Commons, CC0). Crops at several positions/zooms are the class ``oculus sinister``; their
  mirror images stand for the right eye (``oculus dexter``). Crops are also the ``normal fundus``
  rows of the findings table.
* ``skimage/data/microaneurysms.png``: a green-channel detail of image 07_dr of the HRF database
  (A. Maier, CC0) showing microaneurysms; its 8 rotations/flips are the ``microaneurysms`` rows.

To exercise the converters, some files are written as 16-bit grey and as palette PNGs.

    python examples/make_example_data.py
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

OUT = Path(__file__).resolve().parent / "data"
SIZE = 128


def crops(image: np.ndarray, n: int) -> list[np.ndarray]:
    """n square crops around the optic disc / macula at different offsets and zooms."""
    h, w = image.shape[:2]
    out = []
    for k in range(n):
        side = int(min(h, w) * (0.45 + 0.05 * (k % 4)))
        cy = int(h * (0.35 + 0.1 * ((k // 4) % 3)))
        cx = int(w * (0.3 + 0.12 * (k % 3)))
        y0, x0 = max(0, min(h - side, cy - side // 2)), max(0, min(w - side, cx - side // 2))
        tile = Image.fromarray(image[y0 : y0 + side, x0 : x0 + side]).resize((SIZE, SIZE), Image.LANCZOS)
        out.append(np.asarray(tile))
    return out


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    retina = skdata.retina()
    left = crops(retina, 8)

    laterality = OUT / "fundus_laterality"
    for k, tile in enumerate(left):
        for cls, img in (("oculus sinister", tile), ("oculus dexter", tile[:, ::-1])):
            (laterality / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(img)).save(laterality / cls / f"crop{k:02d}.png")

    findings = OUT / "fundus_findings"
    (findings / "images").mkdir(parents=True)
    rows = []
    micro = skdata.microaneurysms()
    for k in range(8):
        tile = np.rot90(micro, k % 4)
        tile = tile[:, ::-1] if k >= 4 else tile
        name = f"images/hrf07_{k}.png"
        if k % 4 == 1:  # 16-bit grey, as exported by many scanners
            Image.fromarray(tile.astype(np.uint16) * 257).save(findings / name)
        else:
            Image.fromarray(np.ascontiguousarray(tile)).save(findings / name)
        rows.append({"image": name, "finding": "microaneurysms", "patient": "hrf-07_dr"})
    for k, tile in enumerate(left):
        green = np.ascontiguousarray(tile[:, :, 1])
        name = f"images/normal_left_{k}.png"
        if k % 4 == 2:  # palette PNG
            Image.fromarray(tile).convert("P", palette=Image.ADAPTIVE, colors=64).save(findings / name)
        else:
            Image.fromarray(green).save(findings / name)
        rows.append({"image": name, "finding": "normal fundus", "patient": "wikimedia-normal-left"})
    with open(findings / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "finding", "patient"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
