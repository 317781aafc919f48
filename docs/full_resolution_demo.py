"""Writes a synthetic full-resolution mammography-like set: 16-bit grey PNGs.

Each image is HEIGHT x WIDTH (default 1024x512), a bright half-ellipse (the
breast) against a dark film with noise, at a random size and placement that
leaves much of the picture black. Class `calcification` adds a cluster of
five 3-pixel specks; class `normal` does not. The specks are faint: 300 levels
of 65535 above the tissue, about one 8-bit step, so a 15x downscale or an 8-bit
decode loses most of them.

    python3 docs/full_resolution_demo.py OUT_DIR [--per-class 32] [--size 1024x512] [--seed 0]

Needs numpy and Pillow (pip install numpy pillow). The README's "Full-resolution
images" run used the defaults.
"""

import argparse
import pathlib

import numpy as np
from PIL import Image


def picture(rng, height, width, specks):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # the breast: a half-ellipse against the left edge, 55-90% of the height
    cy = height * rng.uniform(0.4, 0.6)
    ry = height * rng.uniform(0.28, 0.45)
    rx = width * rng.uniform(0.5, 0.8)
    inside = ((yy - cy) / ry) ** 2 + (xx / rx) ** 2 < 1.0
    tissue = 30000 + 9000 * np.exp(-((xx / rx) ** 2)) + rng.normal(0, 900, (height, width))
    image = np.where(inside, tissue, rng.normal(1500, 400, (height, width)))
    if specks:
        # a cluster of five specks somewhere inside the breast
        while True:
            y, x = rng.integers(0, height), rng.integers(0, width)
            if inside[y, x] and x > 8 and 8 < y < height - 8:
                break
        for _ in range(5):
            sy, sx = y + rng.integers(-6, 7), x + rng.integers(-6, 7)
            image[sy - 1 : sy + 2, sx - 1 : sx + 2] += 300
    return np.clip(image, 0, 65535).astype(np.uint16)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--per-class", type=int, default=32)
    parser.add_argument("--size", default="1024x512")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(args.seed)
    for name, specks in [("normal", False), ("calcification", True)]:
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.per_class):
            pixels = picture(rng, height, width, specks)
            Image.fromarray(pixels).save(folder / f"{i:03}.png")
    print(f"wrote {2 * args.per_class} images of {height}x{width} (16-bit) to {args.out}")


if __name__ == "__main__":
    main()
