"""torch vs cnnext per layer, forward and forward+backward, as CPU-time medians on one thread.

For a shared, loaded machine, where wall-clock medians (pytest-benchmark) swing with other jobs:
each case times torch and cnnext alternately in one process (ROUNDS rounds, each timing at least
~20 ms of repeated calls) with time.process_time, and prints markdown rows
"torch ms / cnnext ms (torch / cnnext)". benchmarks/RESULTS.md's session-7 tables come from it.

Usage: python tools/layer_cpu_times.py [ROUNDS] [GROUPS], GROUPS a comma-separated subset of
avg,conv1d,dw,pw (average pooling, conv1d, depthwise and pointwise layers of MobileNetV2).
"""
import sys, time, statistics, torch, torch.nn.functional as F, cnnext
from cnnext import functional as CF
torch.set_num_threads(1)
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 7

def cpu(fn, reps):
    a = time.process_time()
    for _ in range(reps): fn()
    return (time.process_time() - a) / reps

def case(label, make):
    """make(impl) -> (fwd, fwdbwd) callables."""
    res = {}
    calls = {impl: make(impl) for impl in ("torch", "cnnext")}
    for impl, (f, fb) in calls.items():
        f(); fb()
    # reps so that one timing is >= ~20 ms
    reps = {}
    for impl, (f, fb) in calls.items():
        t = cpu(fb, 1)
        reps[impl] = max(1, int(0.02 / max(t, 1e-6)))
    times = {(impl, ph): [] for impl in calls for ph in ("fwd", "fwd+bwd")}
    for _ in range(ROUNDS):
        for impl, (f, fb) in calls.items():
            with torch.no_grad():
                times[(impl, "fwd")].append(cpu(f, reps[impl]))
            times[(impl, "fwd+bwd")].append(cpu(fb, reps[impl]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"| {label} | " + " | ".join(
        f"{med[('torch', ph)]*1e3:.3g} / {med[('cnnext', ph)]*1e3:.3g} ({med[('torch', ph)]/med[('cnnext', ph)]:.2f})"
        for ph in ("fwd", "fwd+bwd")) + " |", flush=True)

def pool(op_t, op_c, shape, **kw):
    def make(impl):
        x = torch.randn(shape, requires_grad=True)
        op = op_t if impl == "torch" else op_c
        y = op(x, **kw); gy = torch.randn_like(y)
        return (lambda: op(x, **kw), lambda: torch.autograd.grad(op(x, **kw), x, gy))
    return make

def conv(shape_x, shape_w, fn_t, fn_c, fmt=torch.contiguous_format, **kw):
    def make(impl):
        x = torch.randn(shape_x)
        if len(shape_x) == 4: x = x.to(memory_format=fmt)
        x.requires_grad_()
        w = torch.randn(shape_w, requires_grad=True); b = torch.randn(shape_w[0], requires_grad=True)
        op = fn_t if impl == "torch" else fn_c
        y = op(x, w, b, **kw); gy = torch.randn_like(y)
        return (lambda: op(x, w, b, **kw), lambda: torch.autograd.grad(op(x, w, b, **kw), (x, w, b), gy))
    return make

groups = sys.argv[2].split(",") if len(sys.argv) > 2 else ["avg", "conv1d", "dw", "pw"]
if "avg" in groups:
    print("\n| avg_pool2d case | fwd torch / cnnext ms (ratio) | fwd+bwd |\n| --- | --- | --- |")
    for label, shape in [("lenet.avgpool1 N150 32x26x26 k2", (150, 32, 26, 26)), ("lenet.avgpool2 N150 64x11x11 k2", (150, 64, 11, 11)),
                         ("cnn_pad.avgpool1 N64 32x28x28 k2", (64, 32, 28, 28)), ("cnn_pad.avgpool2 N64 64x14x14 k2", (64, 64, 14, 14)),
                         ("cnn_small.avgpool1 N32 16x28x28 k2", (32, 16, 28, 28))]:
        case(label, pool(F.avg_pool2d, CF.avg_pool2d, shape, kernel_size=2))
    case("cifar_bn.avgpool N64 64x6x6 adaptive 1x1", pool(F.adaptive_avg_pool2d, CF.adaptive_avg_pool2d, (64, 64, 6, 6), output_size=1))
    case("N32 64x7x7 adaptive 3x3 (non-divisible)", pool(F.adaptive_avg_pool2d, CF.adaptive_avg_pool2d, (32, 64, 7, 7), output_size=3))
    case("N32 64x15x15 k3 s2 p1 ceil count_include_pad=False", pool(F.avg_pool2d, CF.avg_pool2d, (32, 64, 15, 15), kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False))
if "conv1d" in groups:
    print("\n| conv1d case (auto) | fwd torch / cnnext ms (ratio) | fwd+bwd |\n| --- | --- | --- |")
    for (N, ci, co, L, k, s) in [(16, 1, 16, 1000, 3, 1), (16, 1, 1, 16384, 15, 1), (8, 16, 16, 4096, 7, 1), (8, 32, 64, 8192, 3, 1), (2, 64, 64, 4096, 15, 1), (8, 64, 64, 2048, 5, 2)]:
        case(f"N{N} {ci}->{co} L{L} k{k}" + (f" s{s}" if s > 1 else ""), conv((N, ci, L), (co, ci, k), F.conv1d, CF.conv1d, stride=s, padding=k // 2))
if "dw" in groups:
    print("\n| depthwise 3x3 (MobileNetV2 shapes), auto | fwd torch / cnnext ms (ratio) | fwd+bwd |\n| --- | --- | --- |")
    for (N, C, H, s) in [(8, 32, 112, 1), (8, 96, 112, 2), (8, 144, 56, 1), (8, 144, 56, 2), (8, 192, 28, 1), (8, 576, 14, 1), (8, 960, 7, 1)]:
        case(f"N{N} C{C} {H}x{H} s{s}", conv((N, C, H, H), (C, 1, 3, 3), F.conv2d, CF.conv2d, stride=s, padding=1, groups=C))
if "pw" in groups:
    print("\n| pointwise 1x1 (MobileNetV2 shapes), auto | fwd torch / cnnext ms (ratio) | fwd+bwd |\n| --- | --- | --- |")
    for (N, ci, co, H) in [(8, 32, 16, 112), (8, 16, 96, 112), (8, 144, 24, 56), (8, 144, 32, 28), (8, 576, 96, 14), (8, 960, 160, 7), (8, 320, 1280, 7)]:
        for fmt, tag in [(torch.contiguous_format, ""), (torch.channels_last, " channels_last")]:
            case(f"N{N} {ci}->{co} {H}x{H}{tag}", conv((N, ci, H, H), (co, ci, 1, 1), F.conv2d, CF.conv2d, fmt=fmt))
