"""Turn a pytest-benchmark JSON into benchmarks/RESULTS.md.

Usage: ``python -m benchmarks.report BENCH.json [--out benchmarks/RESULTS.md]``

One section per device: a summary of the ratios, the physical references
(float32 ``torch.mm`` peak, memory copy bandwidth), then conv, pool and
training-step tables with median times, the ratio torch/cnnext (> 1 means
cnnext is faster), and GFLOP/s or GB/s with their fraction of the references;
last the standard architectures' training steps, NCHW and channels_last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.impls import ARCH_TRAIN_IMPLS, CONV_IMPLS, POOL_IMPLS, TRAIN_IMPLS

HERE = Path(__file__).parent
CNNEXT_ALGOS = CONV_IMPLS[1:]
EXPLICIT_ALGOS = ("cnnext-direct", "cnnext-im2col")
"""The algorithms ``auto`` chooses between; "best" is the faster of them."""
TRAIN_ALGOS = TRAIN_IMPLS[1:]
SHORT = {impl: impl.removeprefix("cnnext-") for impl in (*TRAIN_IMPLS, *POOL_IMPLS)}
MISSING = "–"
FAULTS_NOTE = ("Page faults/call (per implementation, in column order) count the fresh memory a"
               " call touched, measured over the warm-up calls; on a VM each costs microseconds.")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One benchmarked case: its identity from ``extra_info`` and its median time in seconds."""

    device: str
    kind: str
    phase: str
    case: str
    impl: str
    median: float
    flops: int | None
    bytes: int | None
    page_faults: int | None

    @property
    def rate(self) -> float | None:
        """GFLOP/s or GB/s, whichever the case measures."""
        work = self.flops if self.flops is not None else self.bytes
        return None if work is None else work / self.median / 1e9


Key = tuple[str, str, str]  # kind, phase, case


class Table:
    """The entries of one device, looked up by (kind, phase, case) and implementation."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.by_key: dict[Key, dict[str, Entry]] = {}
        for entry in entries:
            self.by_key.setdefault((entry.kind, entry.phase, entry.case), {})[entry.impl] = entry

    def rows(self, kind: str) -> list[tuple[Key, dict[str, Entry]]]:
        """Cases of one kind in run order, the passes of one layer next to each other."""
        rows = [(key, impls) for key, impls in self.by_key.items() if key[0] == kind]
        first_seen = {case: i for i, ((_, _, case), _) in reversed(list(enumerate(rows)))}
        return sorted(rows, key=lambda row: first_seen[row[0][2]])

    def reference(self, phase: str) -> Entry | None:
        return next((e for (k, p, _), i in self.by_key.items() if k == "reference" and p == phase
                     for e in i.values()), None)


def load(path: Path) -> tuple[dict[str, Any], list[Entry]]:
    """The JSON document and its entries (benchmarks without our extra_info are skipped)."""
    document = json.loads(path.read_text())
    entries = []
    for bench in document["benchmarks"]:
        info = bench.get("extra_info", {})
        if "kind" not in info:
            continue
        entries.append(Entry(
            info["device"], info["kind"], info["phase"], info["case"], info["impl"],
            bench["stats"]["median"], info.get("flops"), info.get("bytes"), info.get("page_faults"),
        ))
    return document, entries


def ms(entry: Entry | None) -> str:
    return MISSING if entry is None else _sig3(entry.median * 1e3)


def _sig3(value: float) -> str:
    """Three significant digits, trailing zeros kept: 16.0, 0.584, 224; whole numbers from 1000 on."""
    return f"{value:.0f}" if value >= 1000 else f"{value:#.3g}".rstrip(".")


def ratio(reference: Entry | None, entry: Entry | None) -> float | None:
    return None if reference is None or entry is None else reference.median / entry.median


def fmt_ratio(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def fmt_rate(entry: Entry | None, peak: Entry | None) -> str:
    """``"123 (63%)"``: the entry's rate and its fraction of the reference's rate."""
    if entry is None or entry.rate is None:
        return MISSING
    text = _sig3(entry.rate)
    if peak is not None and peak.rate:
        text += f" ({entry.rate / peak.rate:.0%})"
    return text


def faults(impls: dict[str, Entry], names: Sequence[str]) -> str:
    """Page faults per call of each implementation, in column order: ``"6307 / 1 / 0 / 1"``."""
    def one(entry: Entry | None) -> str:
        return MISSING if entry is None or entry.page_faults is None else str(entry.page_faults)
    return " / ".join(one(impls.get(name)) for name in names)


def fastest(impls: dict[str, Entry], names: Sequence[str]) -> Entry | None:
    present = [impls[name] for name in names if name in impls]
    return min(present, key=lambda e: e.median, default=None)


def section(title: str, header: Sequence[str], rows: Iterable[Sequence[str]], note: str = "") -> list[str]:
    """A ``###`` heading, an optional note, and a markdown table."""
    lines = [f"### {title}", ""] + ([note, ""] if note else [])
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def conv_section(table: Table, kind: str = "conv", title: str = "conv2d") -> list[str]:
    peak = table.reference("mm")
    header = ["layer", "pass", *(f"{SHORT[i]} ms" for i in CONV_IMPLS),
              *(f"torch/{SHORT[a]}" for a in CNNEXT_ALGOS), "auto ÷ best time",
              "GFLOP/s torch (of mm peak)", "GFLOP/s best cnnext (of mm peak)", "GFLOP/s auto (of mm peak)",
              "page faults/call"]
    rows = []
    for (_, phase, case), impls in table.rows(kind):
        torch_ = impls.get("torch")
        best = fastest(impls, EXPLICIT_ALGOS)
        rows.append([
            case, phase, *(ms(impls.get(i)) for i in CONV_IMPLS),
            *(fmt_ratio(ratio(torch_, impls.get(a))) for a in CNNEXT_ALGOS),
            fmt_ratio(ratio(impls.get("cnnext-auto"), best)),
            fmt_rate(torch_, peak),
            MISSING if best is None else f"{fmt_rate(best, peak)} {SHORT[best.impl]}",
            fmt_rate(impls.get("cnnext-auto"), peak),
            faults(impls, CONV_IMPLS),
        ])
    note = ("best = the faster of direct and im2col; auto ÷ best time: auto's median over"
            " best's (1.00 = auto picked the winner). GFLOP/s counts 2·MAC of forward,"
            " grad_weight and, except for first layers (image input), grad_input. " + FAULTS_NOTE)
    return section(title, header, rows, note)


def conv1d_section(table: Table) -> list[str]:
    """The conv1d cases, when the run measured any (older result files have none)."""
    if not list(table.rows("conv1d")):
        return []
    return conv_section(table, "conv1d", "conv1d (on the 2-D kernels, height 1)")


def pool_section(table: Table, kind: str = "pool", title: str = "max_pool2d") -> list[str]:
    copy = table.reference("copy")
    header = ["layer", "pass", "torch ms", "cnnext ms", "torch/cnnext",
              "GB/s torch (of copy)", "GB/s cnnext (of copy)", "page faults/call"]
    rows = []
    for (_, phase, case), impls in table.rows(kind):
        torch_, ours = impls.get("torch"), impls.get("cnnext")
        rows.append([case, phase, ms(torch_), ms(ours), fmt_ratio(ratio(torch_, ours)),
                     fmt_rate(torch_, copy), fmt_rate(ours, copy), faults(impls, POOL_IMPLS)])
    note = ("GB/s counts the least traffic: read x, write y (backward: read dy, write dx);"
            " indices are not counted. " + FAULTS_NOTE)
    return section(title, header, rows, note)


def avg_pool_section(table: Table) -> list[str]:
    """The average-pool cases, when the run measured any (older result files have none)."""
    if not list(table.rows("avgpool")):
        return []
    return pool_section(table, "avgpool", "avg_pool2d (2x2) and adaptive_avg_pool2d")


def train_section(table: Table) -> list[str]:
    header = ["model", *(f"{SHORT[i]} ms" for i in TRAIN_IMPLS),
              *(f"torch/{SHORT[a]}" for a in TRAIN_ALGOS), "page faults/call"]
    rows = []
    for (_, _, case), impls in table.rows("train"):
        torch_ = impls.get("torch")
        rows.append([case, *(ms(impls.get(i)) for i in TRAIN_IMPLS),
                     *(fmt_ratio(ratio(torch_, impls.get(a))) for a in TRAIN_ALGOS),
                     faults(impls, TRAIN_IMPLS)])
    title = ("training step (forward, loss, backward, optimizer step; torch vs `convert()`,"
             " and auto+fuse: `fuse(convert())`)")
    return section(title, header, rows, FAULTS_NOTE)


def architecture_train_section(table: Table) -> list[str]:
    """The standard architectures' training steps (issue 15), when the run measured any."""
    rows_in = table.rows("train-arch")
    if not rows_in:
        return []
    peak = table.reference("mm")
    torch_, auto, torch_cl, auto_cl = ARCH_TRAIN_IMPLS
    labels = ("torch", "auto", "torch CL", "auto CL")  # ARCH_TRAIN_IMPLS, in order
    header = ["model", *(f"{label} ms" for label in labels),
              "torch/auto NCHW", "torch/auto CL", "auto NCHW ÷ auto CL", "torch NCHW ÷ torch CL",
              *(f"conv GFLOP/s {label} (of mm peak)" for label in labels),
              "page faults/call"]
    rows = []
    for (_, _, case), impls in rows_in:
        get = impls.get
        rows.append([case, *(ms(get(i)) for i in ARCH_TRAIN_IMPLS),
                     fmt_ratio(ratio(get(torch_), get(auto))), fmt_ratio(ratio(get(torch_cl), get(auto_cl))),
                     fmt_ratio(ratio(get(auto), get(auto_cl))), fmt_ratio(ratio(get(torch_), get(torch_cl))),
                     *(fmt_rate(get(i), peak) for i in ARCH_TRAIN_IMPLS), faults(impls, ARCH_TRAIN_IMPLS)])
    note = ("Forward, cross-entropy, backward, SGD step; torch layers vs `convert()` (algo auto), CL ="
            " model and batch in channels_last. Issue 15's targets: torch/auto >= 1.0 in both layouts, and"
            " auto NCHW ÷ auto CL >= 1.0 (channels_last no slower). Conv GFLOP/s: the FLOPs of every"
            " convolution of the step (forward, grad_weight, grad_input but for the first layer) over the"
            " step's time. " + FAULTS_NOTE)
    return section("training step of the standard architectures (issue 15)", header, rows, note)


def reference_section(table: Table) -> list[str]:
    rows = [[e.case, ms(e), f"{_sig3(e.rate)} {'GFLOP/s' if e.flops else 'GB/s'}"]
            for phase in ("mm", "copy") if (e := table.reference(phase)) is not None]
    note = ("The mm figure is MKL's sgemm, the project's stated reference, not the FMA peak of"
            " the cores: PyTorch's oneDNN convolutions (AVX-512) can exceed it, so fractions"
            " above 100% are real. Pool GB/s are compared with the copy.")
    return section("references (same run)", ["case", "median ms", "rate"], rows, note)


def summary_section(table: Table) -> list[str]:
    """Geometric mean, min and max of torch/cnnext per kind, pass and implementation."""
    rows = []
    for kind, phases in (("conv", ("fwd", "fwd+bwd")), ("conv1d", ("fwd", "fwd+bwd")), ("pool", ("fwd", "fwd+bwd")),
                         ("avgpool", ("fwd", "fwd+bwd")), ("train", ("step",))):
        for phase in phases:
            cases = [impls for (k, p, _), impls in table.rows(kind) if p == phase]
            algos = {"pool": POOL_IMPLS[1:], "avgpool": POOL_IMPLS[1:], "conv": (*CNNEXT_ALGOS, "best"),
                     "conv1d": (*CNNEXT_ALGOS, "best")}.get(kind, (*TRAIN_ALGOS, "best"))
            for algo in algos:
                chosen = [fastest(impls, EXPLICIT_ALGOS) if algo == "best" else impls.get(algo)
                          for impls in cases]
                values = [r for impls, ours in zip(cases, chosen, strict=True)
                          if (r := ratio(impls.get("torch"), ours)) is not None]
                if values:
                    geomean = math.exp(sum(map(math.log, values)) / len(values))
                    rows.append([kind, phase, SHORT.get(algo, algo), str(len(values)),
                                 fmt_ratio(geomean), fmt_ratio(min(values)), fmt_ratio(max(values))])
    header = ["kind", "pass", "cnnext", "cases", "geomean torch/cnnext", "min", "max"]
    return section("summary (ratio torch time / cnnext time; > 1 means cnnext is faster)", header, rows)


def machine_section(document: dict[str, Any], threads: set[int]) -> list[str]:
    info = document["machine_info"]
    build = info.get("cnnext", {})
    facts = [
        ("date", document["datetime"]),
        ("CPU", f"{info.get('cpu_model', MISSING)}, {info.get('cores', MISSING)} cores"),
        ("torch threads", ", ".join(map(str, sorted(threads))) or str(info.get("threads", MISSING))),
        ("torch", info.get("torch_version", MISSING)),
        ("GPU", info.get("gpu") or "none"),
        ("allocator (benchmarks/README.md)", info.get("malloc", MISSING)),
        ("other work on the CPU during the run (cores, average; 0 = quiet machine)",
         info.get("other_load_cores", MISSING)),
        ("cnnext", ", ".join(f"{key} {value}" for key, value in build.items()) or MISSING),
        ("python", f"{info.get('python_implementation', '')} {info.get('python_version', '')}"),
        ("commit", _commit(document.get("commit_info", {}))),
        ("pytest-benchmark", document["version"]),
    ]
    return ["## Machine", ""] + [f"- {name}: {value}" for name, value in facts] + [""]


def _commit(info: dict[str, Any]) -> str:
    commit = str(info.get("id", "unknown"))[:12]
    return f"{commit} (with uncommitted changes)" if info.get("dirty") else commit


def render(document: dict[str, Any], entries: list[Entry], source: str, scaling: Sequence[str]) -> str:
    """The whole RESULTS.md text."""
    lines = [
        "# cnnext benchmark results", "",
        f"Generated by `python -m benchmarks.report {source}` from a run of"
        " `pytest benchmarks/ --benchmark-only`. Times are medians in milliseconds;"
        " ratio = torch time / cnnext time (> 1 means cnnext is faster). Every cnnext case"
        " was checked against torch before it was timed.", "",
    ]
    lines += machine_section(document, _threads(document))
    for device in sorted({e.device for e in entries}):
        table = Table(e for e in entries if e.device == device)
        lines += [f"## {device}", ""]
        for section in (summary_section, reference_section, conv_section, conv1d_section, pool_section, avg_pool_section,
                        train_section, architecture_train_section):
            lines += section(table)
    if scaling:
        lines += ["## Scaling with batch size", ""]
        lines += [f"![time against batch size]({name})" for name in scaling] + [""]
    return "\n".join(lines)


def _threads(document: dict[str, Any]) -> set[int]:
    """Thread counts the cases recorded (one, unless the JSON merges runs)."""
    return {bench["extra_info"]["threads"] for bench in document["benchmarks"]
            if "threads" in bench.get("extra_info", {})}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    document, entries = load(args.json)
    scaling = sorted(path.name for path in args.out.parent.glob("scaling*.png"))
    try:
        source = args.json.resolve().relative_to(Path.cwd())
    except ValueError:
        source = args.json
    args.out.write_text(render(document, entries, str(source), scaling))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
