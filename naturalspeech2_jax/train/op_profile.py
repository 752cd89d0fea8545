"""Where a compiled step's time goes: a profiler trace of a few steps, per HLO instruction.

``profile_steps(compiled, state, batch, directory)`` traces steps with ``jax.profiler`` and
``op_breakdown`` sums the trace's thunk times per HLO instruction of the compiled program, per op
kind (fusions named after what they contain) and per source line of this package (from the
stack frames XLA prints after the module; ``[backward]`` where the op name says transpose). Used
by ``benchmarks/reference_speed.py --profile`` and ``launch/train.py --compile_only --profile``
(``train/aot.py``).
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import jax


def profile_steps(compiled, state, batch, directory: str, steps: int = 3) -> dict[str, Any]:
    """Trace ``steps`` training steps and break their time down by HLO instruction."""
    os.makedirs(directory, exist_ok=True)
    jax.profiler.start_trace(directory, create_perfetto_trace=True)
    for _ in range(steps):
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
    jax.profiler.stop_trace()
    traces = sorted(Path(directory).glob("plugins/profile/*/perfetto_trace.json.gz"))
    if not traces:
        return {"error": f"no perfetto trace under {directory}"}
    hlo = compiled.as_text()
    # The optimised HLO beside the trace: instruction names in the trace map to its lines.
    Path(directory, "hlo.txt").write_text(hlo)
    ops = op_breakdown(traces[-1], hlo, steps=steps, top=200)
    Path(directory, "ops.json").write_text(json.dumps(ops, indent=1))
    return {
        "trace": str(traces[-1]),
        "ops_json": str(Path(directory, "ops.json")),
        "top_kinds": ops["by_kind"][:10],
        "top_sources": ops["by_source"][:10],
    }


_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s([a-z][\w\-]*)\(")
_OPNAME = re.compile(r'op_name="([^"]*)"')
_FRAME = re.compile(r"stack_frame_id=(\d+)")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_TABLE_ROW = re.compile(r"^(\d+) (.*)$")
_FIELDS = re.compile(r"(\w+)=(\d+)")


def stack_frames(hlo_text: str) -> dict[int, list[tuple[str, str, int]]]:
    """{stack_frame_id: [(file, function, line), innermost first]} from the tables XLA prints
    after the module (FileNames, FunctionNames, FileLocations, StackFrames)."""
    tables: dict[str, dict[int, str]] = collections.defaultdict(dict)
    section = ""
    for line in hlo_text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            section = line
            continue
        m = _TABLE_ROW.match(line) if section else None
        if m:
            tables[section][int(m.group(1))] = m.group(2)
        elif section and line.strip():
            section = ""
    names = {k: v.strip('"') for k, v in tables["FileNames"].items()}
    funcs = {k: v.strip('"') for k, v in tables["FunctionNames"].items()}
    locations = {}
    for k, v in tables["FileLocations"].items():
        f = dict((a, int(b)) for a, b in _FIELDS.findall(v))
        locations[k] = (names.get(f.get("file_name_id"), "?"),
                        funcs.get(f.get("function_name_id"), "?"), f.get("line", 0))  # fmt: skip
    frames = {k: dict((a, int(b)) for a, b in _FIELDS.findall(v))
              for k, v in tables["StackFrames"].items()}  # fmt: skip
    out = {}
    for k in frames:
        chain, seen, cur = [], set(), k
        while cur in frames and cur not in seen:
            seen.add(cur)
            chain.append(locations.get(frames[cur].get("file_location_id"), ("?", "?", 0)))
            cur = frames[cur].get("parent_frame_id", 0)
        out[k] = chain
    return out


def hlo_instructions(hlo_text: str) -> dict[str, dict[str, str]]:
    """{instruction name: {"opcode", "op_name", "source" (the innermost frame in this package:
    ``models/wavenet.py:88 WaveNetLayer.__call__``), "contains" for fusions}} of every
    computation (the profiler names thunks after them)."""
    frames = stack_frames(hlo_text)
    info: dict[str, dict[str, str]] = {}
    fused_ops: dict[str, list[str]] = collections.defaultdict(list)
    computation = ""
    for line in hlo_text.splitlines():
        if line and not line.startswith(" ") and line.endswith("{"):  # a computation header
            computation = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, opcode = m.groups()
        op, frame = _OPNAME.search(line), _FRAME.search(line)
        calls = _CALLS.search(line)
        info[name] = {
            "opcode": opcode,
            "op_name": op.group(1) if op else "",
            "source": _source(frames.get(int(frame.group(1)), []) if frame else []),
            "calls": calls.group(1) if calls else "",
        }
        if opcode not in ("parameter", "constant", "get-tuple-element", "tuple"):
            fused_ops[computation].append(opcode)
    for v in info.values():  # what a fusion is made of: its heaviest-looking op
        inner = fused_ops.get(v["calls"], [])
        for heavy in ("convolution", "dot", "scatter", "gather", "sort", "reduce"):
            if heavy in inner:
                v["contains"] = heavy
                break
    return info


def _source(chain: list[tuple[str, str, int]]) -> str:
    """The innermost frame inside naturalspeech2_jax (else the innermost frame at all)."""
    for file, func, line in chain:
        if "naturalspeech2_jax/" in file:
            return f"{file.split('naturalspeech2_jax/')[-1]}:{line} {func}"
    return f"{os.path.basename(chain[0][0])}:{chain[0][2]} {chain[0][1]}" if chain else "?"


def op_breakdown(trace_path: Path, hlo_text: str, steps: int = 1, top: int = 40) -> dict:
    """Thunk times of a perfetto trace (ms per step) per HLO instruction, per op kind and per
    source line of this package (``[backward]`` where XLA's op_name says transpose)."""
    with gzip.open(trace_path, "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    info = hlo_instructions(hlo_text)
    per_instr: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in info:
            per_instr[e["name"]] += float(e.get("dur", 0.0)) / 1000.0  # us -> ms
    total = sum(per_instr.values()) or 1.0
    by_kind: collections.Counter = collections.Counter()
    by_source: collections.Counter = collections.Counter()
    # XLA names a fusion after what it fuses (transpose_copy_fusion, ynn_fusion for the
    # YNNPACK dots, bitcast_dynamic-update-slice_fusion for scan's stacked residuals, ...).
    by_name: collections.Counter = collections.Counter()
    for name, ms in per_instr.items():
        by_name[re.sub(r"\.\d+$", "", name)] += ms
        v = info[name]
        fused = f"fusion({v.get('contains', 'elementwise')})"
        by_kind[fused if v["opcode"] == "fusion" else v["opcode"]] += ms
        backward = " [backward]" if "transpose(" in v["op_name"] else ""
        by_source[v["source"] + backward] += ms

    def rows(counter, key):
        return [{key: k, "ms_per_step": round(ms / steps, 2), "share": round(ms / total, 4)}
                for k, ms in counter.most_common(top)]  # fmt: skip

    return {
        "steps": steps,
        "op_ms_per_step": round(total / steps, 1),
        "by_kind": rows(by_kind, "kind"),
        "by_source": rows(by_source, "source"),
        "by_name": rows(by_name, "name"),
        "by_instruction": [
            {
                **r,
                "opcode": info[r["instruction"]]["opcode"],
                "source": info[r["instruction"]]["source"],
                "op_name": info[r["instruction"]]["op_name"][-120:],
            }
            for r in rows(per_instr, "instruction")
        ],  # fmt: skip
    }
