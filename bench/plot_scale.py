#!/usr/bin/env python3
"""Plot rcni-bench's scale section (ADD p50 against the number of attached containers) as SVG.

Usage: bench/plot_scale.py BENCH_OUTPUT.txt OUT.svg

Reads lines such as `ours     n=10: 5.84 ms  n=100: 6.79 ms ...` from rcni-bench's output and
draws one line per implementation on a log-scaled count axis. No dependencies beyond Python.
"""
import math
import re
import sys

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 400, 70, 50, 30, 50
COLOURS = {"ours": "#1f77b4", "ref": "#d62728", "floor": "#2ca02c"}
NAMES = {"ours": "ours (rcni)", "ref": "reference (Go, v1.1.1)",
         "floor": "kernel's own attach on the same bridge (floor)"}


def parse(path):
    series = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^(ours|ref|floor attach)\s+(n=\d+: [\d.]+ ms.*)$", line.strip())
        if m:
            pts = [(int(n), float(v)) for n, v in re.findall(r"n=(\d+): ([\d.]+) ms", m.group(2))]
            series[m.group(1).split()[0]] = pts
    return series


def main():
    src, out = sys.argv[1], sys.argv[2]
    series = parse(src)
    chain = "bridge + host-local + portmap" if "+ portmap" in open(src, encoding="utf-8").readline() \
        else "bridge + host-local"
    if not series:
        sys.exit(f"no scale lines in {src}")
    xs = sorted({n for pts in series.values() for n, _ in pts})
    ymax = max(v for pts in series.values() for _, v in pts) * 1.1
    lx0, lx1 = math.log10(xs[0]), math.log10(xs[-1])

    def px(n):
        return PAD_L + (math.log10(n) - lx0) / (lx1 - lx0) * (W - PAD_L - PAD_R)

    def py(v):
        return H - PAD_B - v / ymax * (H - PAD_T - PAD_B)

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">Chain ADD p50 vs attached containers ({chain})</text>']
    for i in range(6):
        v = ymax * i / 5
        y = py(v)
        svg.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{W - PAD_R}" y2="{y:.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    for n in xs:
        x = px(n)
        svg.append(f'<line x1="{x:.1f}" y1="{PAD_T}" x2="{x:.1f}" y2="{H - PAD_B}" stroke="#eee"/>')
        svg.append(f'<text x="{x:.1f}" y="{H - PAD_B + 16}" text-anchor="middle">{n}</text>')
    svg.append(f'<text x="{(PAD_L + W - PAD_R) / 2}" y="{H - 10}" text-anchor="middle">containers attached (log scale)</text>')
    svg.append(f'<text x="16" y="{H / 2}" transform="rotate(-90 16 {H / 2})" text-anchor="middle">ADD p50 (ms)</text>')
    for k, (name, pts) in enumerate(sorted(series.items())):
        colour = COLOURS.get(name, "#333")
        path = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in pts)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for n, v in pts:
            svg.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{colour}"/>')
            svg.append(f'<text x="{px(n) + 5:.1f}" y="{py(v) - 6:.1f}" fill="{colour}">{v:.1f}</text>')
        # Legend in the top-left corner of the plot, where low early values leave room.
        ly = PAD_T + 20 + 18 * k
        svg.append(f'<line x1="{PAD_L + 12}" y1="{ly}" x2="{PAD_L + 32}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        svg.append(f'<text x="{PAD_L + 36}" y="{ly + 4}">{NAMES.get(name, name)}</text>')
    svg.append("</svg>")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
