#!/usr/bin/python3
"""torchvision ResNets with seeded random weights, and their PyTorch logits: the reference that
`classmod import` and both engines are checked against (tests/torchvision_import.rs).

For each architecture asked for it builds torchvision's own model (`torchvision.models.resnet18`
... `wide_resnet101_2`, or `torchvision.models.resnet.ResNet` with fewer blocks a stage for a
short run), draws every parameter from a seeded generator (convolutions and the classifier as
torchvision initialises them, batch norm's weight, bias, running mean and running variance
randomised so that folding them is exercised), puts it in eval mode and writes

    OUT/NAME.safetensors     the state dict, torchvision's names (num_batches_tracked included,
                             as a real export has it)
    OUT/NAME-io.safetensors  `pixels` (U8, N x 3 x H x W, seeded) and `logits` (F32, N x classes):
                             PyTorch's logits of those pixels normalised with ImageNet's mean and
                             std, as torchvision's models take them

The last line of stdout is one JSON object: per architecture its file names, input size, classes
and the largest |logit|. It needs only Debian's python3-torch and python3-torchvision (no
`safetensors` package: the format is written by hand). Run it with /usr/bin/python3:

    /usr/bin/python3 tools/torchvision_reference.py --out /tmp/tv --arch resnet50 --size 64

Bad arguments: one line on stderr and exit code 2.
"""

import argparse
import json
import struct
import sys

import torch
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]

# name -> (block, blocks a stage, width_per_group): torchvision.models.resnet's table.
ARCHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2], 64),
    "resnet34": (BasicBlock, [3, 4, 6, 3], 64),
    "resnet50": (Bottleneck, [3, 4, 6, 3], 64),
    "resnet101": (Bottleneck, [3, 4, 23, 3], 64),
    "resnet152": (Bottleneck, [3, 8, 36, 3], 64),
    "wide_resnet50_2": (Bottleneck, [3, 4, 6, 3], 128),
    "wide_resnet101_2": (Bottleneck, [3, 4, 23, 3], 128),
}

DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.uint8: "U8"}


def write_safetensors(path, tensors, metadata=None):
    """The safetensors format: an 8-byte little-endian header length, the JSON header (padded
    with spaces to 8 bytes), then each tensor's little-endian bytes."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def build(name, blocks, classes):
    block, layers, wpg = ARCHS[name]
    if blocks is not None:
        layers = blocks
    return ResNet(block, layers, num_classes=classes, width_per_group=wpg)


def randomise(model, generator):
    """torchvision's own initialisation (kaiming for convolutions), redrawn from `generator`, and
    batch norm's four vectors drawn so that folding them changes every value."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
        elif isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.0, generator=generator)
                m.bias.normal_(0.0, 0.1, generator=generator)
                m.running_mean.normal_(0.0, 0.1, generator=generator)
                m.running_var.uniform_(0.5, 1.5, generator=generator)
        elif isinstance(m, torch.nn.Linear):
            bound = 1.0 / m.in_features ** 0.5
            with torch.no_grad():
                m.weight.uniform_(-bound, bound, generator=generator)
                m.bias.uniform_(-bound, bound, generator=generator)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory to write into (must exist)")
    p.add_argument("--arch", required=True, help="comma-separated: " + ", ".join(ARCHS))
    p.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--blocks", help="blocks a stage instead of the architecture's, e.g. 1,1,2,1")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    names = a.arch.split(",")
    bad = [n for n in names if n not in ARCHS]
    if bad or a.size < 1 or a.images < 1 or a.classes < 2:
        print(f"bad arguments: unknown architecture {bad}" if bad else "bad sizes", file=sys.stderr)
        sys.exit(2)
    blocks = [int(b) for b in a.blocks.split(",")] if a.blocks else None
    torch.set_num_threads(2)
    summary = {"torch": torch.__version__, "torchvision": torchvision.__version__, "models": {}}
    for i, name in enumerate(names):
        g = torch.Generator().manual_seed(a.seed * 1000 + i)
        model = build(name, blocks, a.classes)
        randomise(model, g)
        model.eval()
        pixels = torch.randint(0, 256, (a.images, 3, a.size, a.size), generator=g, dtype=torch.uint8)
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        x = (pixels.float() / 255.0 - mean) / std
        with torch.no_grad():
            logits = model(x)
        stem = f"{name}" if blocks is None else f"{name}-blocks{''.join(map(str, blocks))}"
        write_safetensors(f"{a.out}/{stem}.safetensors", model.state_dict())
        write_safetensors(f"{a.out}/{stem}-io.safetensors", {"pixels": pixels, "logits": logits})
        summary["models"][name] = {
            "model": f"{stem}.safetensors",
            "io": f"{stem}-io.safetensors",
            "size": a.size,
            "classes": a.classes,
            "blocks": blocks,
            "max_abs_logit": float(logits.abs().max()),
        }
        print(f"{stem}: {a.images} images of {a.size}x{a.size}, max |logit| {logits.abs().max():.3g}", file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
