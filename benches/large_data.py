#!/usr/bin/env python3
"""Data larger than memory, measured (issue: train on sets that do not fit in RAM).

Trains a small model (one strided convolution, a pool, the classifier: the data
path dominates) for 2 epochs on a folder-per-class set, once with the decoded
images in memory and once inside a memory cgroup of LIMIT bytes with the disk
cache (written on the first run, then read as batches need it), and prints time to the first
batch, each epoch's time and images/s, and the peak memory of the cgroup.

    cargo build --release && cargo run --release --example synthetic_set -- /work/bench/set40k 40000 256 8
    sudo python3 benches/large_data.py target/release/convnet /work/bench/set40k 3G

Needs root (the cgroup). Nothing here is a test: the figures go to BENCHMARKS.md.
"""
import os, re, subprocess, sys, tempfile, time

TINY = """[[layers]]
type = "conv2d"
filters = 8
kernel = 4
stride = 4

[[layers]]
type = "relu"

[[layers]]
type = "maxpool2d"
pool = 4

[[layers]]
type = "flatten"

[[layers]]
type = "dense"
"""

def run(cmd, cgroup=None):
    """Runs cmd, returning [(seconds since start, line)] of its stdout."""
    prefix = []
    if cgroup:
        prefix = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup]
    start = time.monotonic()
    proc = subprocess.Popen(prefix + cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append((time.monotonic() - start, line.rstrip()))
    proc.wait()
    if proc.returncode != 0:
        print("\n".join(l for _, l in lines)); sys.exit(f"failed: {cmd}")
    return lines, time.monotonic() - start

def report(name, lines, total, peak=None):
    sys.stdout.flush()
    first = next(t for t, l in lines if l.startswith("Model:"))
    print(f"== {name}")
    for _, l in lines:
        if l.startswith(("Decoded cache", "No cache", "Found")):
            print("  " + l)
    print(f"  time to first batch (scan + decode/cache + model): {first:.1f} s")
    for _, l in lines:
        m = re.match(r"Epoch (\d+)/\d+ - ([\d.]+)s .* - ([\d.]+) img/s - data wait ([\d.]+)%", l)
        if m:
            print(f"  epoch {m[1]}: {m[2]} s, {m[3]} img/s, data wait {m[4]}%")
    print(f"  total {total:.1f} s" + (f", peak cgroup memory {peak / 1e9:.2f} GB" if peak else ""))

def main():
    binary, data, limit = sys.argv[1], sys.argv[2], sys.argv[3]
    limit_bytes = int(float(limit[:-1]) * {"G": 1 << 30, "M": 1 << 20}[limit[-1]])
    work = tempfile.mkdtemp(prefix="convnet-large-")
    model = os.path.join(work, "tiny.toml")
    open(model, "w").write(TINY)
    base = [binary, "train", "--train", data, "--model", model, "--image-size", "224", "--epochs", "2",
            "--batch-size", "32", "--validation-split", "0.1", "--threads", "2"]
    lines, total = run(base + ["--cache", "memory", "--out", os.path.join(work, "memory")])
    sys.stdout.flush()
    report("in memory (no limit)", lines, total)
    cgroup = f"/sys/fs/cgroup/memory/convnet-bench-{os.getpid()}"
    os.mkdir(cgroup)
    try:
        open(f"{cgroup}/memory.limit_in_bytes", "w").write(str(limit_bytes))
        cache = os.path.join(work, "cache")
        for attempt in ("first run: writes the cache", "second run: cache reused"):
            open(f"{cgroup}/memory.max_usage_in_bytes", "w").write("0")
            out = os.path.join(work, f"disk-{attempt[:5]}")
            lines, total = run(base + ["--cache-dir", cache, "--out", out], cgroup)
            peak = int(open(f"{cgroup}/memory.max_usage_in_bytes").read())
            report(f"inside a {limit} memory cgroup, disk cache ({attempt})", lines, total, peak)
        same = open(os.path.join(work, "memory/model.safetensors"), "rb").read() == \
            open(os.path.join(work, "disk-first/model.safetensors"), "rb").read()
        print(f"== model.safetensors identical in memory and from the disk cache: {same}")
    finally:
        os.rmdir(cgroup)

main()
