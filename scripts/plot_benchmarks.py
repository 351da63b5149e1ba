#!/usr/bin/env python3
"""Plots benchmark figures kept in docs/data/ as PNGs for docs/benchmarks.md.

Today one figure: BGP mesh convergence against the number of nodes, from
docs/data/bgp_mesh.csv (one row per run of `lab/benches/bgp_mesh.rs`), written to
docs/bgp-mesh-convergence.png. Both series of the bench, "all Established" and "all routes
installed", are drawn as a point per run and a line through the median of each N.

    python3 scripts/plot_benchmarks.py                         # CSV -> PNG, prints the medians
    python3 scripts/plot_benchmarks.py --add-mesh-log LOG ...  # first append the runs of bench logs

A bench log is the output (stdout and stderr) of
`BRINDLE_MESH_BENCH_NODES=N cargo bench -p brindle-lab --bench bgp_mesh > LOG 2>&1`: its table
rows `| run | nodes | sessions | x.xx s | y.yy s |`, each followed by the bench's
`load average: ...` line (its 1-minute figure goes to the CSV). Runs are numbered on from the
runs of the same N already in the CSV. The row is stamped with the log's modification time (when the bench
ended) and the commit checked out now, unless --measured-utc / --commit say otherwise.

Needs matplotlib (Debian: apt-get install python3-matplotlib) for the plot, not for
--add-mesh-log.
"""

import argparse
import csv
import datetime
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESH_CSV = os.path.join(ROOT, "docs", "data", "bgp_mesh.csv")
MESH_PNG = os.path.join(ROOT, "docs", "bgp-mesh-convergence.png")
MESH_COLUMNS = [
    "nodes",
    "sessions",
    "run",
    "established_s",
    "routes_s",
    "load_avg",
    "measured_utc",
    "commit",
]

ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*([\d.]+) s\s*\|\s*([\d.]+) s\s*\|$")
LOAD = re.compile(r"^load average:\s*([\d.]+)")


class InputError(Exception):
    """A log or CSV that does not read as expected; reported without a traceback."""


def parse_mesh_log(path, measured_utc, commit):
    """The runs of one bgp_mesh bench log, as CSV rows."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from e
    rows = []
    for line in lines:
        m = ROW.match(line.strip())
        if m:
            run, nodes, sessions, established, routes = m.groups()
            rows.append(
                {
                    "nodes": nodes,
                    "sessions": sessions,
                    "run": run,
                    "established_s": established,
                    "routes_s": routes,
                    "load_avg": "",
                    "measured_utc": measured_utc,
                    "commit": commit,
                }
            )
            continue
        m = LOAD.match(line.strip())
        if m and rows and not rows[-1]["load_avg"]:
            rows[-1]["load_avg"] = m.group(1)
    if not rows:
        raise InputError(f"{path}: no result row of the mesh bench (did the run finish?)")
    return rows


def read_mesh_csv(path):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != MESH_COLUMNS:
                raise InputError(f"{path}: columns {reader.fieldnames}, expected {MESH_COLUMNS}")
            rows = list(reader)
    except FileNotFoundError:
        return []
    for i, row in enumerate(rows, start=2):
        try:
            row["nodes"] = int(row["nodes"])
            row["sessions"] = int(row["sessions"])
            row["established_s"] = float(row["established_s"])
            row["routes_s"] = float(row["routes_s"])
            row["load_avg"] = float(row["load_avg"]) if row["load_avg"] else None
        except ValueError as e:
            raise InputError(f"{path}:{i}: {e}") from e
    return rows


def append_mesh_rows(path, rows):
    new = not os.path.exists(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MESH_COLUMNS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def medians(rows):
    """{nodes: (sessions, runs, median established, median installed)}"""
    out = {}
    for n in sorted({r["nodes"] for r in rows}):
        of_n = [r for r in rows if r["nodes"] == n]
        out[n] = (
            of_n[0]["sessions"],
            len(of_n),
            statistics.median(r["established_s"] for r in of_n),
            statistics.median(r["routes_s"] for r in of_n),
        )
    return out


def print_median_table(rows):
    print("| nodes | sessions | runs | all Established (median) | all routes installed (median) |")
    print("|---|---|---|---|---|")
    for n, (sessions, runs, est, inst) in medians(rows).items():
        print(f"| {n} | {sessions:,} | {runs} | {est:.2f} s | {inst:.2f} s |")


def plot_mesh(rows, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("matplotlib is missing: apt-get install python3-matplotlib (or pip install matplotlib)")

    med = medians(rows)
    ns = list(med)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    series = [
        ("established_s", 2, "all sessions Established", "tab:blue", "o"),
        ("routes_s", 3, "all routes installed", "tab:orange", "s"),
    ]
    for key, idx, label, color, marker in series:
        ax.scatter(
            [r["nodes"] for r in rows],
            [r[key] for r in rows],
            color=color,
            marker=marker,
            alpha=0.45,
            s=28,
            label=f"{label}, each run",
        )
        ax.plot(
            ns,
            [med[n][idx] for n in ns],
            color=color,
            marker=marker,
            linewidth=1.8,
            label=f"{label}, median",
        )
    ax.set_xlabel("nodes N (one brindle-node agent each)")
    ax.set_ylabel("seconds from starting all agents")
    ax.set_xticks(ns)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)

    # The session count of each N on a top axis aligned with the bottom one.
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    top.set_xticks(ns)
    top.set_xticklabels([f"{med[n][0]:,}" for n in ns], fontsize=8)
    top.set_xlabel("BGP sessions N(N-1)/2 (full node-to-node mesh)", fontsize=9)

    ax.set_title("brindle-node, BGP mesh: convergence after starting N agents at once", fontsize=11)
    loads = [r["load_avg"] for r in rows if r["load_avg"] is not None]
    load = f"load average (1 min) {min(loads):.1f} to {max(loads):.1f}" if loads else "load not recorded"
    dates = sorted({r["measured_utc"][:10] for r in rows if r["measured_utc"]})
    commits = sorted({r["commit"] for r in rows if r["commit"]})
    caption = (
        f"Release build, all N agents as processes in network namespaces on one 2-core machine shared with "
        f"other builds ({load}).\nFigures are late by up to one polling round (a brindlectl and an ip per node). "
        f"lab/benches/bgp_mesh.rs, {', '.join(dates)}, commit {', '.join(commits)}."
    )
    fig.text(0.01, 0.01, caption, fontsize=7.5, color="0.3", va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, dpi=100)
    plt.close(fig)


def git_head():
    try:
        return subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--add-mesh-log",
        metavar="LOG",
        nargs="+",
        default=[],
        help="append the runs of these bgp_mesh bench logs to the CSV first",
    )
    p.add_argument("--commit", help="commit the logged runs were built from (default: HEAD now)")
    p.add_argument(
        "--measured-utc",
        metavar="'YYYY-MM-DD HH:MM'",
        help="when the logged runs ended (default: each log's modification time)",
    )
    p.add_argument("--csv", default=MESH_CSV, help="the mesh CSV (default: docs/data/bgp_mesh.csv)")
    p.add_argument("--out", default=MESH_PNG, help="the PNG to write (default: docs/bgp-mesh-convergence.png)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    args = p.parse_args()

    try:
        added = []
        for log in args.add_mesh_log:
            when = args.measured_utc
            if not when:
                try:
                    mtime = os.path.getmtime(log)
                except OSError as e:
                    raise InputError(f"{log}: {e.strerror}") from e
                when = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
            added.append((log, parse_mesh_log(log, when, args.commit or git_head())))
        # Only when every log read: a bad one adds nothing. A log's runs count on from the runs
        # of the same N already in the CSV, so that (nodes, run) names one run.
        existing = read_mesh_csv(args.csv)
        for log, rows in added:
            for row in rows:
                before = max((int(r["run"]) for r in existing if r["nodes"] == int(row["nodes"])), default=0)
                row["run"] = str(before + 1)
                existing.append({**row, "nodes": int(row["nodes"])})
            append_mesh_rows(args.csv, rows)
            print(f"{log}: {len(rows)} run(s) of {rows[0]['nodes']} nodes added to {args.csv}")
        rows = read_mesh_csv(args.csv)
        if not rows:
            raise InputError(f"{args.csv}: no runs (add some with --add-mesh-log)")
        print_median_table(rows)
        if not args.no_plot:
            plot_mesh(rows, args.out)
            print(f"wrote {args.out} ({os.path.getsize(args.out) // 1024} KiB)")
    except InputError as e:
        sys.exit(f"plot_benchmarks: {e}")


if __name__ == "__main__":
    main()
