#!/usr/bin/python3
"""PyTorch CPU reference for `classmod eval` / `classmod bench`.

What it is for
--------------
1. An independent accuracy reference: it rebuilds a CIFAR ResNet-(6n+2) in plain PyTorch exactly
   like akamaster/pytorch_resnet_cifar10 (BasicBlock, option-A or option-B shortcuts, eval-mode
   BN), loads a safetensors file strictly and evaluates top-1 / top-5 on an ImageFolder dataset
   (a `.tar.gz` read in place, or a directory), decoding with PIL.
2. The CPU speed baseline for the Rust `classmod bench`: it times decoding, batched forward passes
   over a preloaded tensor, and single-image latency, with torch's own CPU kernels. Batch-1
   latency is given twice: `batch1_ms` as plain torch runs it, and `batch1_ms_onednn` with the
   convolutions forced through oneDNN (torch's batch-1 fallback is very slow with a generic BLAS,
   as in Debian's build); compare against the faster one.
3. A logit-level check: `--png-dir` evaluates lossless PNGs named `cifar10_NN_L.png` (label L)
   and compares the logits with a reference file (`--reference-logits`).

It needs only Python 3, Debian's python3-torch (1.13), numpy and PIL; safetensors is parsed by
hand (no `safetensors` package). Run it with /usr/bin/python3 (the system interpreter that has
torch), e.g.

    /usr/bin/python3 tools/pytorch_reference.py \
        --model ../shared/models/resnet20-cifar10.safetensors \
        --data ../shared/data/cifar10-jpeg.tar.gz --split test --threads 2

    /usr/bin/python3 tools/pytorch_reference.py \
        --model ../shared/models/resnet56-cifar10.safetensors \
        --png-dir ../shared/data/cifar10-lossless-20 \
        --reference-logits ../shared/data/cifar10-lossless-20/reference-logits.json

The last line of stdout is one JSON object with the figures (`n`, `top1`, `top5`, timings, ...);
progress and notes go to stderr. Bad input: one line on stderr and exit code 2.

Model description: if the safetensors `__metadata__` holds `classmod.arch`, `classmod.input` and
`classmod.classes` (as written by `classmod import`), they are used; otherwise the architecture is
detected from tensor names and shapes, and the normalisation / class names come from `--mean`,
`--std` (default: ImageNet statistics, as the pretrained CIFAR ResNets use; a model with other
than 3 input channels must be given both), `--size` (default 32x32; images of another size are
resized bilinearly and counted as `resized`) and `--class-names` (default: sorted folder names of
the split). Labels are the index of an image's class folder name in the class-name list.
"""

import argparse
import copy
import io
import json
import os
import re
import statistics
import sys
import tarfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_MEAN = "0.485,0.456,0.406"
DEFAULT_STD = "0.229,0.224,0.225"
BN_EPS = 1e-5  # nn.BatchNorm2d's default, used by the reference models


class InputError(Exception):
    """A problem with a file or flag the user gave: reported as one line, exit code 2."""


def note(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# safetensors, parsed by hand
# --------------------------------------------------------------------------------------------

def _bf16_to_f32(raw):
    u16 = np.frombuffer(raw, dtype="<u2")
    return (u16.astype(np.uint32) << 16).view(np.float32)


_DTYPES = {
    "F64": lambda raw: np.frombuffer(raw, dtype="<f8"),
    "F32": lambda raw: np.frombuffer(raw, dtype="<f4"),
    "F16": lambda raw: np.frombuffer(raw, dtype="<f2"),
    "BF16": _bf16_to_f32,
    "I64": lambda raw: np.frombuffer(raw, dtype="<i8"),
    "I32": lambda raw: np.frombuffer(raw, dtype="<i4"),
    "I16": lambda raw: np.frombuffer(raw, dtype="<i2"),
    "I8": lambda raw: np.frombuffer(raw, dtype="i1"),
    "U8": lambda raw: np.frombuffer(raw, dtype="u1"),
    "BOOL": lambda raw: np.frombuffer(raw, dtype="u1"),
}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def read_safetensors(path):
    """Returns ({name: float32 numpy array}, metadata dict or {}) of a safetensors file."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}")
    if len(blob) < 8:
        raise InputError(f"{path}: too short for a safetensors file")
    hlen = int.from_bytes(blob[:8], "little")
    if hlen > len(blob) - 8 or hlen > 100 * 1024 * 1024:
        raise InputError(f"{path}: safetensors header length {hlen} exceeds the file")
    try:
        header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: safetensors header is not JSON: {e}")
    if not isinstance(header, dict):
        raise InputError(f"{path}: safetensors header is not a JSON object")
    data = memoryview(blob)[8 + hlen:]
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: tensor `{name}` has a malformed header entry")
        if dtype not in _DTYPES:
            raise InputError(f"{path}: tensor `{name}` has unsupported dtype {dtype}")
        count = int(np.prod(shape)) if shape else 1
        if not (0 <= begin <= end <= len(data)) or end - begin != count * _ITEMSIZE[dtype]:
            raise InputError(f"{path}: tensor `{name}` ({dtype} {shape}) has bad data_offsets [{begin}, {end}]")
        arr = _DTYPES[dtype](data[begin:end]).reshape(shape)
        tensors[name] = arr.astype(np.float32)  # copies: the model always runs in f32
    return tensors, metadata


def canonical_state(tensors):
    """Strips a `module.` prefix (DataParallel checkpoints) and drops `num_batches_tracked`."""
    out = {}
    for name, arr in tensors.items():
        if name.startswith("module."):
            name = name[len("module."):]
        if name.endswith("num_batches_tracked"):
            continue
        out[name] = arr
    return out


# --------------------------------------------------------------------------------------------
# Architecture: description and detection
# --------------------------------------------------------------------------------------------

def detect_arch(state, path):
    """Derives {blocks_per_stage, widths, shortcut, in_channels, num_classes} from names+shapes."""
    need = ["conv1.weight", "linear.weight"]
    for k in need:
        if k not in state:
            raise InputError(f"{path}: no tensor `{k}`: not a CIFAR ResNet in akamaster's naming")
    blocks = {}
    for name in state:
        m = re.match(r"layer(\d+)\.(\d+)\.", name)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks:
        raise InputError(f"{path}: no `layerS.B.*` tensors")
    stages = sorted(blocks)
    if stages != list(range(1, len(stages) + 1)):
        raise InputError(f"{path}: stages {stages} are not numbered 1..N")
    counts = {s: len(blocks[s]) for s in stages}
    if len(set(counts.values())) != 1 or any(sorted(blocks[s]) != list(range(counts[s])) for s in stages):
        raise InputError(f"{path}: unequal or gapped blocks per stage: {counts}")
    widths = []
    for s in stages:
        w = state.get(f"layer{s}.0.conv1.weight")
        if w is None:
            raise InputError(f"{path}: no tensor `layer{s}.0.conv1.weight`")
        widths.append(int(w.shape[0]))
    shortcut = "B" if any(".shortcut.0.weight" in n for n in state) else "A"
    return {
        "blocks_per_stage": counts[stages[0]],
        "widths": widths,
        "shortcut": shortcut,
        "in_channels": int(state["conv1.weight"].shape[1]),
        "num_classes": int(state["linear.weight"].shape[0]),
    }


def parse_floats(text, flag):
    try:
        return [float(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise InputError(f"{flag} `{text}`: expected comma-separated numbers")


def model_description(path, args):
    """Loads the weights and returns (state, arch, input_spec, class_names or None, source)."""
    tensors, metadata = read_safetensors(path)
    state = canonical_state(tensors)

    def meta_json(key):
        if key not in metadata:
            return None
        try:
            return json.loads(metadata[key])
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: metadata `{key}` is not JSON: {e}")

    arch, inp, classes = meta_json("classmod.arch"), meta_json("classmod.input"), meta_json("classmod.classes")
    if arch is None or "stages" not in arch:
        detected = detect_arch(state, path)
    if arch is None:
        arch, source = detected, "detected from tensor names"
    elif "stages" in arch:
        source = "classmod metadata (a whole network description)"
        for k in ("in_channels", "stem", "stages", "shortcut", "num_classes"):
            if k not in arch:
                raise InputError(f"{path}: metadata `classmod.arch` lacks `{k}`")
    else:
        source = "classmod metadata"
        for k in ("blocks_per_stage", "widths", "shortcut", "in_channels", "num_classes"):
            if k not in arch:
                raise InputError(f"{path}: metadata `classmod.arch` lacks `{k}`")
        arch["widths"] = list(arch["widths"])
        if {k: arch[k] for k in detected} != detected:
            raise InputError(f"{path}: metadata arch {arch} disagrees with the tensors ({detected})")
    if inp is None:
        c = arch["in_channels"]
        mean, std = parse_floats(args.mean, "--mean"), parse_floats(args.std, "--std")
        if c != 3 and (args.mean == DEFAULT_MEAN or args.std == DEFAULT_STD):
            raise InputError(f"{path}: {c}-channel model without classmod metadata: pass --mean and --std "
                             f"({c} values each; the defaults are 3-channel ImageNet statistics)")
        inp = {"channels": c, "height": args.size[0], "width": args.size[1], "mean": mean, "std": std}
    if len(inp["mean"]) != inp["channels"] or len(inp["std"]) != inp["channels"]:
        raise InputError(f"mean {inp['mean']} / std {inp['std']} need one value per input channel ({inp['channels']})")
    if inp["channels"] != arch["in_channels"]:
        raise InputError(f"{path}: input spec has {inp['channels']} channels, the network takes {arch['in_channels']}")
    if classes is None and args.class_names:
        classes = [c.strip() for c in args.class_names.split(",")]
    if classes is not None and len(classes) != arch["num_classes"]:
        raise InputError(f"{len(classes)} class names for {arch['num_classes']} outputs")
    return state, arch, inp, classes, source


def arch_name(arch):
    if "stages" in arch:
        sites = sum(s["blocks"] * (3 if isinstance(s["block"], dict) else 2) for s in arch["stages"])
        return f"resnet{sites + 2}[" + ",".join(str(s["channels"]) for s in arch["stages"]) + "]"
    name = f"resnet{6 * arch['blocks_per_stage'] + 2}"
    if arch["shortcut"] == "B":
        name += "-b"
    if list(arch["widths"]) != [16, 32, 64]:
        name += "[" + ",".join(str(w) for w in arch["widths"]) + "]"
    return name


# --------------------------------------------------------------------------------------------
# The network, as in akamaster/pytorch_resnet_cifar10 (resnet.py)
# --------------------------------------------------------------------------------------------

class LambdaLayer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, option="A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if option == "A":
                # Every second pixel, channels zero-padded by planes/4 on each side; no parameters.
                pad = planes // 4
                self.shortcut = LambdaLayer(
                    lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0))
            elif option == "B":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(self.expansion * planes, eps=BN_EPS))
            else:
                raise InputError(f"unknown shortcut option `{option}`")

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    def __init__(self, arch):
        super().__init__()
        widths, n, option = arch["widths"], arch["blocks_per_stage"], arch["shortcut"]
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(arch["in_channels"], widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=BN_EPS)
        for s, planes in enumerate(widths):
            layer = self._make_layer(planes, n, 1 if s == 0 else 2, option)
            setattr(self, f"layer{s + 1}", layer)
        self.num_stages = len(widths)
        self.linear = nn.Linear(widths[-1], arch["num_classes"])

    def _make_layer(self, planes, num_blocks, stride, option):
        layers = []
        for st in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, st, option))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        for s in range(self.num_stages):
            out = getattr(self, f"layer{s + 1}")(out)
        # akamaster: F.avg_pool2d(out, out.size()[3]); the full spatial size is the same for
        # square inputs and stays a global pool for non-square ones.
        out = F.avg_pool2d(out, out.size()[2:])
        out = out.view(out.size(0), -1)
        return self.linear(out)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride on the 3x3), canonical names."""

    def __init__(self, in_planes, width, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=BN_EPS)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=BN_EPS)
        self.conv3 = nn.Conv2d(width, planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes, eps=BN_EPS))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class DescribedResNet(nn.Module):
    """Any network classmod describes whole (`classmod.arch` with `stages`): torchvision's
    ImageNet ResNets (7x7 stride-2 stem, 3x3 stride-2 max-pool) and their relatives, basic or
    bottleneck blocks, projection shortcuts, under classmod's canonical names."""

    def __init__(self, arch):
        super().__init__()
        stem = arch["stem"]
        imagenet = "ImageNet7x7" in stem
        c = (stem.get("ImageNet7x7") or stem.get("Cifar3x3"))["channels"]
        k, stride = (7, 2) if imagenet else (3, 1)
        self.conv1 = nn.Conv2d(arch["in_channels"], c, kernel_size=k, stride=stride, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(c, eps=BN_EPS)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if imagenet else nn.Identity()
        in_planes = c
        for s, st in enumerate(arch["stages"]):
            blocks = []
            for b in range(st["blocks"]):
                stride = st["stride"] if b == 0 else 1
                if isinstance(st["block"], dict):
                    blocks.append(Bottleneck(in_planes, st["block"]["Bottleneck"]["width"], st["channels"], stride))
                else:
                    blocks.append(BasicBlock(in_planes, st["channels"], stride, "B"))
                in_planes = st["channels"]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.num_stages = len(arch["stages"])
        self.linear = nn.Linear(in_planes, arch["num_classes"])

    def forward(self, x):
        out = self.pool(F.relu(self.bn1(self.conv1(x))))
        for s in range(self.num_stages):
            out = getattr(self, f"layer{s + 1}")(out)
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


def build_model(state, arch, path):
    model = DescribedResNet(arch) if "stages" in arch else CifarResNet(arch)
    sd = {k: torch.from_numpy(v) for k, v in state.items()}
    for k in model.state_dict():  # BN counters: absent from the files, irrelevant in eval mode
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.tensor(0, dtype=torch.long)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).split())
        raise InputError(f"{path}: weights do not fit {arch_name(arch)}: {first[:400]}")
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def split_entries(names, split):
    """Maps archive/dir relative paths to (class, path) for `<split>/<class>/<file>`, else
    `<class>/<file>` when no split folder exists at all."""
    def parse(depth_after_split):
        out = []
        for name in names:
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if not parts[-1].lower().endswith(IMAGE_EXTS):
                continue
            if depth_after_split and len(parts) >= 3 and parts[-3] == split:
                out.append((parts[-2], name))
            elif not depth_after_split and len(parts) == 2:
                out.append((parts[0], name))
        return out

    entries = parse(True)
    if not entries:
        entries = parse(False)
        if entries:
            note(f"note: no `{split}/` folder; using `<class>/<image>` at the top level")
    return entries


def read_raw(data_path, split):
    """Returns [(class, path, bytes)] of the split's images, from a .tar(.gz) or a directory."""
    if os.path.isdir(data_path):
        names = []
        for root, _, files in os.walk(data_path):
            for f in files:
                names.append(os.path.relpath(os.path.join(root, f), data_path).replace(os.sep, "/"))
        out = []
        for cls, name in split_entries(names, split):
            with open(os.path.join(data_path, name), "rb") as f:
                out.append((cls, name, f.read()))
        return out
    try:
        tf = tarfile.open(data_path, "r:*")
    except (OSError, tarfile.TarError) as e:
        raise InputError(f"{data_path}: not a readable directory or tar archive: {e}")
    out = []
    with tf:
        members = {}
        for m in tf:  # one sequential pass through the (gzip) stream
            if m.isfile():
                members[m.name] = tf.extractfile(m).read()
    for cls, name in split_entries(list(members), split):
        out.append((cls, name, members[name]))
    return out


def balanced_pick(labels, n, seed, num_classes):
    """A seeded class-balanced sample of n indices: equal shares, the remainder spread over the
    first classes; returned in a seeded shuffled order (the Rust --limit has the same contract,
    but not the same random stream, so the picked images differ)."""
    rng = np.random.RandomState(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    present = [c for c in range(num_classes) if len(by_class[c])]
    share, extra = divmod(n, len(present))
    picked = []
    for i, c in enumerate(present):
        k = min(len(by_class[c]), share + (1 if i < extra else 0))
        picked.extend(rng.choice(by_class[c], size=k, replace=False).tolist())
    picked = np.array(picked, dtype=np.int64)
    rng.shuffle(picked)
    return picked


def decode(raw, inp, name, counters):
    mode = {1: "L", 3: "RGB"}.get(inp["channels"])
    if mode is None:
        raise InputError(f"{inp['channels']}-channel input: only 1 (L) and 3 (RGB) are supported")
    try:
        img = Image.open(io.BytesIO(raw))
        img = img.convert(mode)
    except Exception as e:  # PIL raises many types
        raise InputError(f"{name}: cannot decode image: {e}")
    crop = (inp.get("resize") or {}).get("CentreCrop") if isinstance(inp.get("resize"), dict) else None
    if crop is not None and img.size != (inp["width"], inp["height"]):
        # torchvision's Resize(shorter_side) + CenterCrop(H, W), as classmod reads the spec.
        side, (w, h) = crop["shorter_side"], img.size
        size = (side, side * h // w) if w <= h else (side * w // h, side)
        img = img.resize(size, Image.BILINEAR)
        left, top = int(round((size[0] - inp["width"]) / 2.0)), int(round((size[1] - inp["height"]) / 2.0))
        img = img.crop((left, top, left + inp["width"], top + inp["height"]))
        counters["resized"] += 1
    elif img.size != (inp["width"], inp["height"]):
        img = img.resize((inp["width"], inp["height"]), Image.BILINEAR)
        counters["resized"] += 1
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def normalise(hwc_u8, inp):
    """uint8 NHWC -> float32 NCHW, x/255 then (x - mean) / std per channel (torchvision's
    ToTensor + Normalize, in f32)."""
    x = torch.from_numpy(np.ascontiguousarray(hwc_u8)).permute(0, 3, 1, 2).float().div(255.0)
    mean = torch.tensor(inp["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(inp["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub(mean).div(std).contiguous()


def load_dataset(args, inp, classes):
    """Reads, decodes and normalises the split. Returns (x, labels, paths, classes, counters)."""
    raw = read_raw(args.data, args.split)
    if not raw:
        raise InputError(f"{args.data}: no images under `{args.split}/<class>/`")
    folders = sorted({c for c, _, _ in raw})
    if classes is None:
        classes = folders
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in folders if c not in index]
    if unknown:
        raise InputError(f"{args.data}: class folders {unknown} are not among the model's classes {classes}")
    raw.sort(key=lambda e: (index[e[0]], e[1]))
    labels = np.array([index[c] for c, _, _ in raw], dtype=np.int64)
    order = np.arange(len(raw))
    if args.limit is not None and args.limit < len(raw):
        order = balanced_pick(labels, args.limit, args.seed, len(classes))
    counters = {"resized": 0}
    pixels = np.stack([decode(raw[i][2], inp, raw[i][1], counters) for i in order])
    x = normalise(pixels, inp)
    return x, labels[order], [raw[i][1] for i in order], classes, counters


def load_png_dir(args, inp):
    """The `cifar10_NN_L.png` files of --png-dir, sorted by NN; the label is L."""
    files = []
    for f in os.listdir(args.png_dir):
        m = re.fullmatch(r".*_(\d+)_(\d+)\.png", f)
        if m:
            files.append((int(m.group(1)), int(m.group(2)), f))
    if not files:
        raise InputError(f"{args.png_dir}: no files named <name>_NN_L.png")
    files.sort()
    counters = {"resized": 0}
    pixels = []
    for _, _, f in files:
        with open(os.path.join(args.png_dir, f), "rb") as fh:
            pixels.append(decode(fh.read(), inp, f, counters))
    x = normalise(np.stack(pixels), inp)
    return x, np.array([l for _, l, _ in files], dtype=np.int64), [f for _, _, f in files], counters


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------

def forward_all(model, x, batch):
    """All batched forwards over the preloaded tensor, after one warm-up batch."""
    with torch.no_grad():
        model(x[:batch])
        outs = []
        t0 = time.perf_counter()
        for i in range(0, x.shape[0], batch):
            outs.append(model(x[i:i + batch]))
        seconds = time.perf_counter() - t0
    return torch.cat(outs), seconds


def batch1_latency_ms(model, x, iters):
    if iters <= 0:
        return None
    with torch.no_grad():
        for i in range(min(10, iters)):
            model(x[i % x.shape[0]:i % x.shape[0] + 1])
        times = []
        for i in range(iters):
            xi = x[i % x.shape[0]:i % x.shape[0] + 1]
            t0 = time.perf_counter()
            model(xi)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def with_onednn_convs(model):
    """A copy whose convolutions always run through oneDNN (torch.utils.mkldnn.MkldnnConv2d on
    dense tensors, same weights and results). Torch 1.13 sends a batch-1 conv with C*H*W <= 20480
    (every conv of a 32x32 CIFAR ResNet) to its im2col + BLAS fallback instead, which is slow
    where torch is linked against a generic BLAS (Debian's build: BLAS_INFO=generic)."""
    import torch.utils.mkldnn as tum

    def swap(module):
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(module, name, tum.MkldnnConv2d(child, torch.float))
            else:
                swap(child)

    fast = copy.deepcopy(model)
    swap(fast)
    return fast.eval()


def topk_fractions(logits, labels):
    labels = torch.from_numpy(labels)
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    top1 = (top[:, 0] == labels).double().mean().item()
    top5 = (top == labels[:, None]).any(dim=1).double().mean().item()
    return top1, top5


def compare_reference(logits, paths, ref_path, ref_key, arch, model_path, inp):
    try:
        with open(ref_path) as f:
            ref = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{ref_path}: cannot read reference logits: {e}")
    table = ref.get("logits", ref)
    if ref_key is None:
        stem = os.path.basename(model_path)
        keys = [k for k in table if isinstance(table[k], list)]
        cands = [k for k in keys if k == arch_name(arch)] or [k for k in keys if stem.startswith(k)]
        if len(keys) == 1:
            cands = keys
        if len(cands) != 1:
            raise InputError(f"{ref_path}: cannot tell which of {keys} belongs to {stem}; pass --reference-key")
        ref_key = cands[0]
    if ref_key not in table:
        raise InputError(f"{ref_path}: no logits for `{ref_key}`")
    ref_logits = np.array(table[ref_key], dtype=np.float64)
    if "images" in ref:
        pos = {name: i for i, name in enumerate(ref["images"])}
        missing = [p for p in paths if p not in pos]
        if missing:
            raise InputError(f"{ref_path}: no reference for {missing[:3]}")
        ref_logits = ref_logits[[pos[p] for p in paths]]
    if ref_logits.shape != tuple(logits.shape):
        raise InputError(f"{ref_path}: reference shape {ref_logits.shape} != ours {tuple(logits.shape)}")
    norm = ref.get("normalization")
    if norm and (not np.allclose(norm.get("mean", inp["mean"]), inp["mean"], atol=1e-6)
                 or not np.allclose(norm.get("std", inp["std"]), inp["std"], atol=1e-6)):
        note(f"warning: reference normalisation {norm} differs from ours (mean {inp['mean']}, std {inp['std']})")
    diff = np.abs(logits.double().numpy() - ref_logits)
    same_argmax = bool((logits.argmax(1).numpy() == ref_logits.argmax(1)).all())
    return ref_key, float(diff.max()), float(diff.mean()), same_argmax


# --------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="safetensors file with CIFAR ResNet weights")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="ImageFolder dataset: .tar.gz (read in place) or directory")
    src.add_argument("--png-dir", help="directory of <name>_NN_L.png files (label L)")
    p.add_argument("--split", default="test", help="split folder inside --data (default: test)")
    p.add_argument("--batch", type=int, default=256, help="batch size of the timed forwards (default 256)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--limit", type=int, default=None, help="seeded class-balanced sample of N images")
    p.add_argument("--seed", type=int, default=0, help="seed of --limit (default 0)")
    p.add_argument("--batch1-iters", type=int, default=200, help="single-image forwards to time (0: skip)")
    p.add_argument("--mean", default=DEFAULT_MEAN, help="per-channel mean without classmod metadata")
    p.add_argument("--std", default=DEFAULT_STD, help="per-channel std without classmod metadata")
    p.add_argument("--size", default="32x32", help="HxW input size without classmod metadata (default 32x32)")
    p.add_argument("--class-names", default=None, help="comma-separated names without classmod metadata")
    p.add_argument("--logits-out", default=None, help="write the first 20 images' logits as JSON here")
    p.add_argument("--reference-logits", default=None, help="with --png-dir: JSON of expected logits")
    p.add_argument("--reference-key", default=None, help="model key in --reference-logits (default: guessed)")
    args = p.parse_args(argv)
    m = re.fullmatch(r"(\d+)x(\d+)", args.size)
    if not m:
        p.error(f"--size `{args.size}`: expected HxW, e.g. 32x32")
    args.size = (int(m.group(1)), int(m.group(2)))
    if args.batch < 1 or (args.threads is not None and args.threads < 1) or (args.limit is not None and args.limit < 1):
        p.error("--batch, --threads and --limit must be at least 1")
    return args


def main(argv):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    state, arch, inp, classes, source = model_description(args.model, args)
    model = build_model(state, arch, args.model)
    note(f"model {args.model}: {arch_name(arch)} ({source}), {arch}, input {inp}")

    t0 = time.perf_counter()
    if args.data is not None:
        x, labels, paths, classes, counters = load_dataset(args, inp, classes)
    else:
        x, labels, paths, counters = load_png_dir(args, inp)
    decode_seconds = time.perf_counter() - t0
    if counters["resized"]:
        note(f"note: {counters['resized']} images were resized to {inp['height']}x{inp['width']}")
    n = int(x.shape[0])
    note(f"{n} images decoded in {decode_seconds:.2f} s; running forwards (batch {args.batch}, "
         f"{torch.get_num_threads()} threads)")

    logits, forward_seconds = forward_all(model, x, args.batch)
    top1, top5 = topk_fractions(logits, labels)
    batch1_ms = batch1_latency_ms(model, x, args.batch1_iters)
    batch1_ms_onednn = onednn_max_abs_diff = None
    if args.batch1_iters > 0 and torch.backends.mkldnn.is_available():
        fast = with_onednn_convs(model)
        with torch.no_grad():
            onednn_max_abs_diff = (fast(x[:8]) - logits[:8]).abs().max().item()
        batch1_ms_onednn = batch1_latency_ms(fast, x, args.batch1_iters)

    result = {
        "mode": "data" if args.data is not None else "png-dir",
        "model": args.model,
        "arch": arch_name(arch),
        "n": n,
        "top1": top1,
        "top5": top5,
        "decode_seconds": decode_seconds,
        "forward_seconds": forward_seconds,
        "images_per_second_forward": n / forward_seconds,
        "images_per_second_end_to_end": n / (decode_seconds + forward_seconds),
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "batch1_ms": batch1_ms,
        "batch1_iters": args.batch1_iters,
        "batch1_ms_onednn": batch1_ms_onednn,
        "onednn_max_abs_diff": onednn_max_abs_diff,
        "torch_version": torch.__version__,
    }
    if args.data is not None:
        result.update({"data": args.data, "split": args.split, "limit": args.limit})
    if counters["resized"]:
        result["resized"] = counters["resized"]
    if args.reference_logits:
        key, max_diff, mean_diff, same_argmax = compare_reference(
            logits, paths, args.reference_logits, args.reference_key, arch, args.model, inp)
        result.update({"reference_key": key, "max_abs_diff": max_diff, "mean_abs_diff": mean_diff,
                       "same_argmax": same_argmax})
    if args.logits_out:
        k = min(20, n)
        dump = {"model": args.model, "arch": arch_name(arch), "classes": classes if args.data else None,
                "images": paths[:k], "labels": labels[:k].tolist(),
                "logits": [[round(float(v), 6) for v in row] for row in logits[:k]]}
        with open(args.logits_out, "w") as f:
            json.dump(dump, f, indent=1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
