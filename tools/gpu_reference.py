#!/usr/bin/env python3
"""PyTorch on a CUDA GPU, timed as `classmod throughput` times classmod: the baseline of
scripts/gpu-check.sh.

The same network as tools/pytorch_reference.py builds (the classmod model file's weights and
architecture), in eval mode, eager, cuDNN with `torch.backends.cudnn.benchmark = True`, in f32 and
in f16 autocast. For each batch size, synthetic inputs already on the GPU; a warm-up; then one
forward at a time, each followed by `torch.cuda.synchronize()` (the logits are ready, as a caller
needs them), for --seconds; the median and p90 of those passes, and images/s at the median.

    python3 tools/gpu_reference.py --model r20.safetensors --batches 1,64,256 --json

Prints a table, and with --json one JSON line last: {"rows": [{"mode", "batch", ...}]}.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_reference as ref  # noqa: E402

import torch  # noqa: E402


def time_passes(fn, seconds):
    warm = time.perf_counter()
    while time.perf_counter() - warm < min(seconds / 4, 1.0):
        fn()
    torch.cuda.synchronize()
    ms = []
    start = time.perf_counter()
    while len(ms) < 10 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    return ms


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--batches", default="1,64,256")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--modes", default="f32,f16-autocast")
    p.add_argument("--json", action="store_true")
    # What pytorch_reference.model_description reads for files without classmod metadata.
    p.add_argument("--mean", default=ref.DEFAULT_MEAN)
    p.add_argument("--std", default=ref.DEFAULT_STD)
    p.add_argument("--size", default=[32, 32], type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--class-names", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_reference: PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    state, arch, inp, _, _ = ref.model_description(args.model, args)
    model = ref.build_model(state, arch, args.model).cuda()
    rows = []
    with torch.inference_mode():
        for mode in args.modes.split(","):
            for batch in [int(b) for b in args.batches.split(",")]:
                x = torch.randn(batch, inp["channels"], inp["height"], inp["width"], device="cuda")
                if mode == "f32":
                    fn = lambda: model(x)  # noqa: E731
                elif mode == "f16-autocast":
                    def fn():
                        with torch.autocast("cuda", dtype=torch.float16):
                            return model(x)
                else:
                    raise SystemExit(f"gpu_reference: unknown mode {mode}")
                ms = time_passes(fn, args.seconds)
                med, p90 = ms[len(ms) // 2], ms[len(ms) * 9 // 10]
                rows.append({"mode": mode, "batch": batch, "passes": len(ms), "median_ms": med,
                             "p90_ms": p90, "images_per_second": batch / (med / 1e3)})
    print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name(0)}, cuDNN {torch.backends.cudnn.version()}")
    print(f"{'mode':>14} {'batch':>6} {'passes':>8} {'median ms':>12} {'p90 ms':>12} {'images/s':>14}")
    for r in rows:
        print(f"{r['mode']:>14} {r['batch']:>6} {r['passes']:>8} {r['median_ms']:>12.4f} {r['p90_ms']:>12.4f} "
              f"{r['images_per_second']:>14.0f}")
    if args.json:
        print(json.dumps({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
