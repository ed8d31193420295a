"""Which compiled CPU kernels keep accumulators on the stack: FMAs that read a stack slot.

Usage: ``python tools/check_spills.py [cnnext/_C*.so]`` (needs binutils' ``objdump``).

A microkernel's accumulators belong in vector registers; where GCC runs out of them (usually after
inlining a step into a driver's loops) it keeps them in stack slots, and every FMA then reads and
writes memory: the pointwise steps ran at half speed on AVX2 that way (benchmarks/RESULTS.md, session
22). This lists every function with such FMAs (a few after a loop, a tail's, cost nothing) and fails
where one of the step functions named in STEPS has any, as their FMAs are all in their hot loop, or
is missing (inlined into a driver, as the pointwise steps were, where its FMAs cannot be told apart).
"""
from __future__ import annotations

import collections
import glob
import re
import subprocess
import sys

# The microkernels whose every FMA is in their reduction loop.
STEPS = ("channel_vector_step<", "channel_vector_window_step<", "pointwise_step<")

_FUNCTION = re.compile(r"^[0-9a-f]+ <(.*)>:$")
_STACK_FMA = re.compile(r"\tvfn?m(add|sub)\d{3}p[sd] .*\(%rsp\)")


def stack_fmas(library: str) -> tuple[collections.Counter, set[str]]:
    """FMAs with a stack operand per function of ``library``, and the names of all its functions (demangled)."""
    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", library], check=True,
                             capture_output=True, text=True).stdout
    counts: collections.Counter = collections.Counter()
    functions: set[str] = set()
    function = ""
    for line in listing.splitlines():
        match = _FUNCTION.match(line)
        if match:
            function = match.group(1)
            functions.add(function)
        elif _STACK_FMA.search(line):
            counts[function] += 1
    return counts, functions


def main(argv: list[str]) -> int:
    libraries = argv or glob.glob("cnnext/_C*.so")
    if not libraries:
        print("no cnnext/_C*.so: build the extension first", file=sys.stderr)
        return 2
    failed = False
    for library in libraries:
        counts, functions = stack_fmas(library)
        for function, count in counts.most_common():
            step = any(name in function for name in STEPS)
            failed |= step
            print(f"{count:5d} {'STEP ' if step else ''}{function[:160]}")
        for name in STEPS:
            if not any(name in function for function in functions):
                failed = True
                print(f"missing (inlined?): {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
