#!/usr/bin/python3
"""The peer engines `classmod bench --peers` measures classmod against, on the same inputs.

What it is for
--------------
An edge engineer choosing a CPU runtime compares against ONNX Runtime and OpenVINO, not only
PyTorch. This script is the peers' side of `classmod bench --peers`: it builds the model from the
same classmod model file (`pytorch_reference.py`'s exact akamaster network), exports it to ONNX
with PyTorch, and runs it in

- `pytorch`: PyTorch's TorchScript, frozen and optimised for inference (oneDNN convolutions),
- `onnxruntime`: ONNX Runtime's CPU provider, all graph optimisations, sequential execution,
- `openvino-latency` / `openvino-throughput`: OpenVINO's CPU plugin with its LATENCY and
  THROUGHPUT performance hints (batch 64 through an `AsyncInferQueue` of the plugin's optimal
  number of requests under THROUGHPUT), f32 inference precision forced (OpenVINO would run
  bf16 where the CPU has it, and we compare float32 engines).

Every engine gets the same number of threads (`--threads`, what classmod uses) and the same
float32 NCHW inputs, read from `--inputs` (raw little-endian f32, `--shape N,C,H,W`, written by
classmod from its own normalisation). Each engine's logits on the first inputs are checked
against PyTorch eager's (max abs difference, reported).

Protocol (so that the Rust side interleaves engines in the same minutes): after loading, one JSON
line `{"ready": {...}}` (versions, logit differences, PyTorch eager's logits of the first inputs
for classmod's own check); then for each line `round` on stdin, one JSON line `{"round": {engine:
figures}}` (batch-1 latency median and p90 over `--batch1-iters` single-image calls, batch-64
throughput over all inputs); `quit` or end of input ends it. Notes go to stderr; bad input is one
line on stderr and exit code 2.

Needs: Debian's python3-torch (1.13, for the export and the PyTorch engine), and `onnxruntime`
and `openvino` from PyPI (a venv with `--system-site-packages`, as `classmod bench --peers`
makes).
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_reference import (DEFAULT_MEAN, DEFAULT_STD, DescribedResNet, InputError,  # noqa: E402
                               arch_name, build_model, model_description, note)

ENGINES = ("pytorch", "onnxruntime", "openvino-latency", "openvino-throughput")
CHECK_IMAGES = 64


def percentile(values, q):
    """Nearest rank, rounding half up: the same rule as classmod's side."""
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


class Engine:
    """One engine: `run(x)` returns logits as a numpy array; `throughput(x, batch)` images/s over
    all of `x` in batches of `batch` (engines with their own async queue override it)."""

    name = ""

    def run(self, x):
        raise NotImplementedError

    def batches(self, x, batch):
        return [np.ascontiguousarray(x[i:i + batch]) for i in range(0, x.shape[0] - batch + 1, batch)]

    def throughput(self, x, batch, min_seconds):
        parts = self.batches(x, batch)
        self.run(parts[0])
        done, t0 = 0, time.perf_counter()
        while True:
            for p in parts:
                self.run(p)
            done += len(parts) * batch
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                return done / elapsed

    def latency_ms(self, x, iters):
        singles = [np.ascontiguousarray(x[i:i + 1]) for i in range(min(x.shape[0], 64))]
        for i in range(min(10, iters)):
            self.run(singles[i % len(singles)])
        times = []
        for i in range(iters):
            xi = singles[i % len(singles)]
            t0 = time.perf_counter()
            self.run(xi)
            times.append((time.perf_counter() - t0) * 1e3)
        return percentile(times, 0.5), percentile(times, 0.9)


class TorchScript(Engine):
    name = "pytorch"

    def __init__(self, model, example):
        with torch.no_grad():
            traced = torch.jit.trace(model, torch.from_numpy(example))
            self.module = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            # Two calls: TorchScript's profiling executor specialises on the first runs.
            for _ in range(2):
                self.module(torch.from_numpy(example))

    def run(self, x):
        with torch.no_grad():
            return self.module(torch.from_numpy(x)).numpy()


class OnnxRuntime(Engine):
    name = "onnxruntime"

    def __init__(self, onnx_path, threads):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.version = ort.__version__

    def run(self, x):
        return self.session.run(None, {self.input: x})[0]


class OpenVino(Engine):
    """Static shapes per batch size (OpenVINO's fastest form): one compiled model for batch 1 and
    one for the throughput batch, both with the same hint."""

    def __init__(self, onnx_path, threads, hint, batch, shape):
        import openvino as ov
        self.ov = ov
        self.name = f"openvino-{hint.lower()}"
        core = ov.Core()
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                  "INFERENCE_PRECISION_HINT": "f32"}
        self.compiled = {}
        for b in sorted({1, batch}):
            model = core.read_model(onnx_path)
            model.reshape({model.inputs[0].get_any_name(): [b, *shape[1:]]})
            self.compiled[b] = core.compile_model(model, "CPU", config)
        self.requests = {b: c.create_infer_request() for b, c in self.compiled.items()}
        self.hint = hint
        self.version = ov.__version__ if hasattr(ov, "__version__") else ov.get_version()
        self.nireq = int(self.compiled[batch].get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def run(self, x):
        request = self.requests.get(x.shape[0])
        if request is None:  # only the first-inputs check asks for another size: one at a time
            return np.concatenate([self.run(x[i:i + 1]) for i in range(x.shape[0])])
        return request.infer({0: x})[0].copy()

    def throughput(self, x, batch, min_seconds):
        if self.hint != "THROUGHPUT" or self.nireq <= 1:
            return super().throughput(x, batch, min_seconds)
        parts = self.batches(x, batch)
        queue = self.ov.AsyncInferQueue(self.compiled[batch], self.nireq)
        for p in parts[:self.nireq]:
            queue.start_async({0: p})
        queue.wait_all()
        done, t0 = 0, time.perf_counter()
        while True:
            for p in parts:
                queue.start_async({0: p})
            queue.wait_all()
            done += len(parts) * batch
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                return done / elapsed


class GlobalPool(torch.nn.Module):
    """The same network with its final pooling as a global average pool: akamaster's
    `avg_pool2d(out, out.size()[3])` takes its kernel from the input's shape, which ONNX export
    refuses as not constant. Same result, as `GlobalAveragePool` in ONNX."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        out = torch.relu(n.bn1(n.conv1(x)))
        for s in range(n.num_stages):
            out = getattr(n, f"layer{s + 1}")(out)
        return n.linear(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(out, 1), 1))


def export_onnx(model, example, path):
    # torch 1.13 warns that it cannot fold the option-A shortcut's strided slices: harmless.
    warnings.filterwarnings("ignore", category=UserWarning)
    with torch.no_grad():
        torch.onnx.export(model, torch.from_numpy(example), path, input_names=["input"],
                          output_names=["logits"], opset_version=13,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="classmod model file (safetensors)")
    p.add_argument("--inputs", required=True, help="raw little-endian float32 NCHW inputs")
    p.add_argument("--shape", required=True, help="N,C,H,W of --inputs")
    p.add_argument("--threads", type=int, required=True, help="threads for every engine")
    p.add_argument("--batch", type=int, default=64, help="the throughput batch (default 64)")
    p.add_argument("--batch1-iters", type=int, default=300, help="single-image calls per round")
    p.add_argument("--min-seconds", type=float, default=1.0, help="least seconds of a throughput figure")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}")
    p.add_argument("--onnx-out", default=None, help="keep the exported ONNX model here")
    args = p.parse_args(argv)
    try:
        args.shape = [int(v) for v in args.shape.split(",")]
    except ValueError:
        p.error(f"--shape `{args.shape}`: expected N,C,H,W")
    if len(args.shape) != 4 or min(args.shape) < 1:
        p.error(f"--shape {args.shape}: expected four positive numbers")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in args.engines if e not in ENGINES]
    if unknown:
        p.error(f"--engines: unknown {unknown}; known: {', '.join(ENGINES)}")
    if args.threads < 1 or args.batch < 1 or args.batch1_iters < 1:
        p.error("--threads, --batch and --batch1-iters must be at least 1")
    if args.shape[0] < args.batch:
        p.error(f"--shape: {args.shape[0]} inputs, fewer than one batch of {args.batch}")
    return args


def read_inputs(path, shape):
    want = int(np.prod(shape)) * 4
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}")
    if size != want:
        raise InputError(f"{path}: {size} bytes, shape {shape} needs {want}")
    return np.fromfile(path, dtype="<f4").reshape(shape)


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    x = read_inputs(args.inputs, args.shape)
    defaults = argparse.Namespace(mean=DEFAULT_MEAN, std=DEFAULT_STD, size=tuple(args.shape[2:]), class_names=None)
    state, arch, inp, _classes, _source = model_description(args.model, defaults)
    if [inp["channels"], inp["height"], inp["width"]] != args.shape[1:]:
        raise InputError(f"--shape {args.shape} does not fit the model's input {inp}")
    model = build_model(state, arch, args.model)
    check = np.ascontiguousarray(x[:CHECK_IMAGES])
    with torch.no_grad():
        reference = model(torch.from_numpy(check)).numpy()

    tmp = tempfile.TemporaryDirectory(prefix="classmod-peers-")
    onnx_path = args.onnx_out or os.path.join(tmp.name, f"{arch_name(arch)}.onnx")
    # A network described whole pools adaptively already.
    exportable = (model if isinstance(model, DescribedResNet) else GlobalPool(model)).eval()
    export_onnx(exportable, check[:1], onnx_path)
    note(f"exported {arch_name(arch)} to ONNX ({os.path.getsize(onnx_path)} bytes, opset 13)")

    engines, versions = [], {"torch": torch.__version__}
    for name in args.engines:
        if name == "pytorch":
            engines.append(TorchScript(exportable, check[:1]))
        elif name == "onnxruntime":
            e = OnnxRuntime(onnx_path, args.threads)
            versions["onnxruntime"] = e.version
            engines.append(e)
        else:
            hint = "LATENCY" if name == "openvino-latency" else "THROUGHPUT"
            e = OpenVino(onnx_path, args.threads, hint, args.batch, args.shape)
            versions["openvino"] = e.version
            engines.append(e)
    diffs = {e.name: float(np.abs(e.run(check) - reference).max()) for e in engines}
    extra = {e.name: {"infer_requests": e.nireq} for e in engines if isinstance(e, OpenVino)}
    ready = {"versions": versions, "threads": args.threads, "max_abs_diff_vs_pytorch_eager": diffs,
             "engines": [e.name for e in engines], "config": extra, "onnx": onnx_path if args.onnx_out else None,
             "reference_logits": reference.tolist()}
    print(json.dumps({"ready": ready}), flush=True)

    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command != "round":
            raise InputError(f"unknown command `{command}` (round, quit)")
        figures = {}
        for e in engines:
            median, p90 = e.latency_ms(x, args.batch1_iters)
            ips = e.throughput(x, args.batch, args.min_seconds)
            figures[e.name] = {"batch1_median_ms": median, "batch1_p90_ms": p90,
                               "batch_images_per_second": ips}
        print(json.dumps({"round": figures}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
