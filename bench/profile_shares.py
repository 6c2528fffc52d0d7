"""Shares of a job's CPU by part of the engine, from a perf profile with call stacks
(BENCHMARKS.md, "Where the two jobs spend their CPU").

    perf record -F 499 --call-graph dwarf,16384 -o PROFILE -- \
        riskstream bench engine SPEC --events 1000000 --out NEW_DIR
    perf script --no-inline -i PROFILE | python bench/profile_shares.py

(`--no-inline` takes a second or two; without it perf resolves every inlined frame through
addr2line, which takes many minutes on this binary, for frames the parts below do not need.)

Each sample goes to the first part below that one of its stack's frames belongs to; samples of
the event generator (which `bench engine` runs before the timed part) are left out. Kernel time
spent copying written files into the page cache is counted apart, whatever wrote them. Prints
the shares, the leaf functions that take the most, then the kernel's samples by what entered
the kernel: a system call (`write`, `madvise`, ...) or the user function whose memory access
faulted (on a virtual machine, the first touch of a page can cost several microseconds).
"""

import collections
import re
import sys

# In order: a sample is counted under the first that matches a frame of its stack.
PARTS = [
    ("generator (not timed)", r"MemorySource::generate|generator::"),
    ("JSON decoding", r"decode::|JsonDecoder"),
    ("Parquet encoding", r"parquet::|ZSTD_|zstd"),
    ("Delta log", r"deltalake|delta_kernel"),
    ("streaming aggregation", r"stream::partial::|GroupValues|aggregates::|groups_accumulator|unnest|time_window"),
    ("incremental window evaluation", r"stream::incremental::"),
    ("generic window path", r"stream::rolling::"),
    ("page-cache copy of written files", r"^copy_folio_from_iter_atomic$"),
    ("other DataFusion and Arrow", r"datafusion|arrow_"),
]
SKIPPED = PARTS[0][0]


def samples(lines):
    """Each sample's stack, leaf first, as (symbol name, whether in the kernel)."""
    stack = []
    for line in lines:
        if not line.strip():
            if stack:
                yield stack
            stack = []
        elif line[0] in " \t":
            fields = line.strip().split(" ", 1)
            if len(fields) == 2:
                kernel = fields[1].endswith("([kernel.kallsyms])")
                symbol = re.sub(r" \(.*\)$", "", fields[1])
                stack.append((re.sub(r"\+0x[0-9a-f]+$", "", symbol).strip(), kernel))
    if stack:
        yield stack


def kernel_entry(stack):
    """For a sample in the kernel, the first user-space frame below it; None otherwise."""
    if not stack[0][1]:
        return None
    user = [name for name, kernel in stack if not kernel and not name.startswith("[unknown")]
    return user[0] if user else "(no user frame)"


def part_of(stack):
    for name, pattern in PARTS:
        if any(re.search(pattern, frame) for frame, _ in stack):
            return name
    return "rest"


def main() -> None:
    parts = collections.Counter()
    leaves = collections.Counter()
    entries = collections.Counter()
    for stack in samples(sys.stdin):
        part = part_of(stack)
        if part == SKIPPED:
            continue
        parts[part] += 1
        leaves[(part, stack[0][0])] += 1
        entry = kernel_entry(stack)
        if entry is not None:
            entries[entry] += 1
    total = sum(parts.values())
    if total == 0:
        sys.exit("no samples with call stacks on stdin (perf script of a --call-graph profile)")
    print(f"{total} samples, the generator's left out")
    for part, n in parts.most_common():
        print(f"{100 * n / total:6.2f}%  {part}")
    print()
    for (part, leaf), n in leaves.most_common(30):
        print(f"{100 * n / total:6.2f}%  {leaf[:110]}  [{part}]")
    print()
    print(f"{100 * sum(entries.values()) / total:6.2f}%  in the kernel, entered from:")
    for entry, n in entries.most_common(12):
        print(f"{100 * n / total:6.2f}%  {entry[:110]}")


if __name__ == "__main__":
    main()
