"""Markdown table of a side-by-side sitting (`bench/side_by_side.sh`'s JSON lines).

Each tfdarts row is paired with the PyTorch port's row of the same config that follows it
in the file (the sitting alternates them). Growth rows (label ``growth``) and unpaired rows
are listed without a port column.

    python bench/table.py bench/out/side_by_side.jsonl
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional, Tuple


def read(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def key(row: Dict[str, Any]) -> Tuple:
    """(kind, cells, channels, batch, hw, cin, order) of a tfdarts or a port row."""
    if "impl" in row:
        kind = "retrain" if row["impl"].endswith("augment") else "search"
        hw, cin = row["hw"], row.get("cin", 1 if row["hw"] == 28 else 3)
        return kind, row["layers"], row["channels"], row["batch"], hw, cin, row.get("order", 0)
    c = row["config"]
    kind = "retrain" if row["bench"] == "retrain_step" else "search"
    return kind, c["cells"], c["channels"], c["batch"], c["shape"][0], c["shape"][2], c.get("order", 0)


def pairs(rows: List[Dict[str, Any]]) -> List[Tuple[Dict[str, Any], Optional[Dict[str, Any]]]]:
    out, i = [], 0
    while i < len(rows):
        row = rows[i]
        if "impl" in row:
            i += 1
            continue
        port = rows[i + 1] if i + 1 < len(rows) and "impl" in rows[i + 1] else None
        if port is not None and key(port) != key(row):
            port = None
        out.append((row, port))
        i += 2 if port is not None else 1
    return out


def line(row: Dict[str, Any], port: Optional[Dict[str, Any]]) -> str:
    kind, cells, ch, batch, hw, cin, order = key(row)
    s = row["median_s_per_step"]
    images = batch / s
    cfg = f"{kind} {cells} cells C={ch} b{batch} {hw}x{hw}x{cin}" + (f", order {order}" if order else "")
    if row.get("config", {}).get("malloc", "glibc") != "glibc":
        cfg += f", {row['config']['malloc']}"
    cells_out = [cfg, f"{s:.3f}", f"{images:.1f}", f"{row['cpu_s_per_step']:.2f}",
                 f"{row['trace_first_step_s']:.0f} s", f"{row['peak_rss_mb'] / 1024:.2f} GB"]
    if port is None:
        cells_out += ["-", "-", "-", "-"]
    else:
        ps = port["median_step_s"]
        cells_out += [f"{ps:.3f}", f"{ps / s:.2f}x", f"{port['peak_rss_mb'] / 1024:.2f} GB",
                      f"{row['peak_rss_mb'] / port['peak_rss_mb']:.2f}x"]
    return "| " + " | ".join(cells_out) + " |"


def table(rows: List[Dict[str, Any]]) -> str:
    head = ("| config | s/step | images/s (train) | CPU s/step | trace + first step | peak RSS "
            "| port s/step | speed-up | port peak RSS | memory vs port |")
    return "\n".join([head, "|" + "---|" * 10] + [line(r, p) for r, p in pairs(rows)])


if __name__ == "__main__":
    print(table(read(sys.argv[1] if len(sys.argv) > 1 else "bench/out/side_by_side.jsonl")))
