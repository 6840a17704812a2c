#!/usr/bin/python3
"""Side-by-side float32 GEMM: PyTorch (bench_matmul.py, strongest setting) vs `alignsharp bench gemm`.

For every shape of bench_matmul.py's `square` and `xfmr` sets, runs PyTorch and AlignSharp back to back while
holding the shared build lock (the order alternates between rounds), then prints a markdown table with the
median GFLOP/s of each side over the rounds and the ratio.

  /usr/bin/python3 bench/gemm_vs_torch.py --rounds 3 [--only sq1024] [--jsonl results.jsonl]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile

TORCH_DIR = "/work/shared/bench/torch_ref"
LOCK = "/tmp/alignsharp-build.lock"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, "src/AlignSharp.Cli/bin/Release/net10.0/alignsharp")


def shapes():
    sys.path.insert(0, TORCH_DIR)
    import bench_matmul as bm
    sets = bm.shape_sets()
    for name, m, k, n, flags in sets["square"] + sets["xfmr"]:
        batch = 1
        for f in flags.split(","):
            if f.startswith("b") and f[1:].isdigit():
                batch = int(f[1:])
        yield name, m, k, n, "ta" in flags, batch


def run_pair(name, m, k, n, ta, batch, threads, torch_first):
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as tj:
        torch_cmd = (f"cd {TORCH_DIR} && /usr/bin/python3 bench_matmul.py --threads {threads} --tuned "
                     f"--omp-wait-policy passive --set square --set xfmr --only '{name}' --json {tj.name} > /dev/null")
        ours_cmd = (f"{OURS} bench gemm --m {m} --k {k} --n {n} --batch {batch} --threads {threads} --reps 15"
                    + (" --trans-a" if ta else ""))
        out_file = tj.name + ".ours"
        cmds = [torch_cmd, f"{ours_cmd} > {out_file}"]
        if not torch_first:
            cmds.reverse()
        subprocess.run(["flock", LOCK, "bash", "-c", " && ".join(cmds)], check=True)
        recs = [json.loads(line) for line in tj if line.strip()]
        torch_rec = [r for r in recs if r["shape_desc"] == name][0]
        with open(out_file) as f:
            ours_rec = json.loads(f.read())
        os.remove(out_file)
    return torch_rec, ours_rec


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None, help="substring filter on shape names")
    p.add_argument("--jsonl", default=None, help="append every raw record (both sides) to this file")
    args = p.parse_args()
    todo = [s for s in shapes() if not args.only or args.only in s[0]]
    res = {s[0]: ([], []) for s in todo}
    for r in range(args.rounds):
        for s in todo:
            t, o = run_pair(*s, args.threads, torch_first=(r % 2 == 0))
            res[s[0]][0].append(t["gflops"]["median"])
            res[s[0]][1].append(o["gflops"])
            print(f"# round {r + 1} {s[0]:40s} torch {t['gflops']['median']:7.1f}  ours {o['gflops']:7.1f}", file=sys.stderr, flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps({"round": r + 1, "torch": t, "ours": o}) + "\n")
    print("| shape | M | K | N | batch | PyTorch GFLOP/s | AlignSharp GFLOP/s | ours / PyTorch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, m, k, n, ta, batch in todo:
        tg, og = statistics.median(res[name][0]), statistics.median(res[name][1])
        label = " ".join(name.split()) + (" (Aᵀ)" if ta else "")
        print(f"| {label} | {m} | {k} | {n} | {batch} | {tg:.1f} | {og:.1f} | {og / tg:.2f} |")


if __name__ == "__main__":
    main()
