"""``restyle-rt info ARTIFACTS``: what an artifacts directory holds, and whether its engines suit this machine.

Spec and batch profile, the graphs (files, sizes, recorded sha256; ``--verify`` re-hashes them), the TensorRT
engines with the load-time compatibility check the trt backend applies (:func:`restyle_rt.artifacts.check_record`;
"cannot check" without TensorRT), the INT8 record of ``restyle-rt calibrate`` (method, kept layers, per-step accuracy,
the CPU it was measured on) and the parity measured at export. ``--json`` prints the same as one JSON object
(strict JSON: an infinite PSNR, identical outputs, is ``null``). Registration imports nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK
from .args import add_artifacts


def register(subparsers) -> None:
    """Add ``info`` to ``restyle-rt``."""
    p = subparsers.add_parser(
        "info",
        help="what an artifacts directory holds: spec, graphs, engines, INT8, parity",
        description=__doc__.split("\n\n")[0].replace("``", ""),
    )
    add_artifacts(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument(
        "--verify",
        action="store_true",
        help="also hash graphs and engines against the manifest (seconds for large graphs; remembered)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Do ``info``: prints the description of ARTIFACTS; 0 unless it cannot be read (2)."""
    d = describe(args.artifacts, verify=args.verify)
    print(json.dumps(strict_json(d), indent=2) if args.json else "\n".join(render(d)))
    return EXIT_OK


def describe(artifacts_dir: os.PathLike, verify: bool = False) -> dict[str, Any]:
    """Everything ``info`` reports about ``artifacts_dir``, as plain data.

    Raises:
        ArtifactError: not a readable artifacts directory.
    """
    from .. import artifacts as A
    from ..manifest import GraphEntry, Source

    art = A.load(artifacts_dir, check_hashes=False)
    m = art.manifest
    return {
        "artifacts": str(art.root.resolve()),
        "format_version": m.format_version,
        "spec": art.spec.to_dict(),
        "batch_profile": art.profile.to_list(),
        "precision": m.precision,
        "opset": m.opset,
        "source": m.source.to_dict() if isinstance(m.source, Source) else m.source,
        "versions": m.versions,
        "graphs": {g: _graph(art.root, rec, verify) for g, rec in m.graphs.items()},
        "variants": {
            k: _graph(art.root, GraphEntry.from_dict(rec), verify)
            for k, rec in (m.variants or {}).items()
            if isinstance(rec, dict) and isinstance(rec.get("file"), str)
        },
        "engines": _engines(art, verify),
        "int8": _int8(m.int8),
        "parity": _parity(m.parity),
    }


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def _graph(root: Path, rec, verify: bool) -> dict:
    """Files, bytes on disk, recorded hashes and (``verify``) whether they still match (``rec``: a GraphEntry)."""
    from .. import artifacts as A
    from ..errors import ArtifactError

    files = [rec.file] + ([rec.data_file] if rec.data_file else [])
    sizes = [_size(root / f) for f in files]
    missing = [f for f, n in zip(files, sizes) if n is None]
    out = {
        "files": files,
        "bytes": None if missing else sum(sizes),
        "missing": missing,
        "sha256": rec.sha256,
        "data_sha256": rec.data_sha256,
        "verified": None,
    }
    if verify and not out["missing"]:
        try:
            for f, sha256 in zip(files, (rec.sha256, rec.data_sha256)):
                if sha256:
                    A.verify_file(root / f, sha256)
            out["verified"] = True
        except ArtifactError:
            out["verified"] = False
    return out


def _engines(art, verify: bool) -> dict:
    """Each engine record, and whether the trt backend would load it here."""
    from .. import artifacts as A
    from ..errors import ArtifactError, RestyleError

    records = art.manifest.engines
    out: dict[str, Any] = {"runtime": None, "device_cc": None, "note": "", "records": []}
    if not records:
        return out
    from ..runtime.trt_compat import try_load_trt

    info = try_load_trt()
    cc = None
    if info is None:
        out["note"] = "cannot check: no TensorRT"
    else:
        out["runtime"] = {"flavour": info.flavour, "version": info.version}
        try:
            from ..runtime import cuda

            cc = cuda.compute_capability(0) if cuda.device_count() > 0 else None
            out["note"] = "" if cc else "compute capability not checked: no CUDA device"
        except RestyleError as e:
            out["note"] = f"compute capability not checked: {e}"
    out["device_cc"] = A.cc_str(cc) if cc else None
    for rec in records:
        stored = rec.to_dict()
        row = {
            k: stored.get(k)
            for k in (
                "graph",
                "precision",
                "file",
                "size_bytes",
                "sha256",
                "trt_flavour",
                "trt_version",
                "compute_capabilities",
                "profile",
                "strongly_typed",
                "built_at",
            )
        }
        row["bytes"] = _size(art.root / rec.file)
        if info is None:
            row["status"], row["detail"] = "unchecked", "cannot check: no TensorRT"
        else:
            try:
                A.check_record(art, rec.graph, rec.precision, info.flavour, info.version, cc, verify_hash=verify)
                row["status"] = "ok"
                row["detail"] = f"matches {info.flavour} {info.version}" + (f"; {out['note']}" if out["note"] else "")
            except ArtifactError as e:
                row["status"], row["detail"] = "refused", str(e)
        out["records"].append(row)
    return out


def _int8(rec) -> dict | None:
    """The calibration record's essentials (``rec``: an Int8Record), and whether it was measured on this CPU."""
    if rec is None or not rec.to_dict():
        return None
    from ..runtime.hostinfo import cpu_id

    where = rec.measured_on or None
    return {
        "method": rec.method,
        "tool": rec.tool,
        "data": rec.data,
        "keep_rule": rec.keep_rule,
        "graphs": {g: sorted(encs) for g, encs in rec.graphs.items()},
        "kept_layers": {g: list(v) for g, v in rec.kept_layers.items()},
        "not_shipped": rec.not_shipped,
        "meets_ship_bar": rec.meets_ship_bar,
        "ship_bar": rec.ship_bar,
        "accuracy": {
            label: {
                enc: [{k: r.get(k) for k in ("step", "latent_rel_l2", "image_psnr_db")} for r in rows]
                for enc, rows in encs.items()
            }
            for label, encs in rec.accuracy.items()
        },
        "measured_on": where,
        "measured_on_this_cpu": None if not where or "cpu_id" not in where else where["cpu_id"] == cpu_id(),
    }


def _parity(report: dict | None) -> dict | None:
    """``{graph: {comparison: {output: {rel_l2, psnr_db, max_abs}}}}`` from the export's parity report."""
    if not report:
        return None
    out: dict[str, Any] = {}
    for graph, kinds in report.items():
        if not isinstance(kinds, dict) or graph == "inputs":
            continue
        out[graph] = {
            kind: {o: {k: r.get(k) for k in ("rel_l2", "psnr_db", "max_abs")} for o, r in outs.items()}
            for kind, outs in kinds.items()
            if isinstance(outs, dict)
        }
    if isinstance(report.get("inputs"), dict):
        out["inputs"] = report["inputs"]
    return out


def strict_json(obj):
    """``obj`` with non-finite floats as None (JSON has no Infinity/NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def _mib(n: int | None) -> str:
    if n is None:
        return "missing"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _sha(h: str | None) -> str:
    return f"sha256 {h[:16]}…" if h else "no sha256 recorded"


def _db(v) -> str:
    return "identical" if v is None or (isinstance(v, float) and math.isinf(v)) else f"{v:.1f} dB"


def render(d: dict[str, Any]) -> list[str]:
    """The text report of :func:`describe`'s data."""
    s = d["spec"]
    lines = [
        f"artifacts  {d['artifacts']} (format {d['format_version']})",
        f"model      {s['encoder_type']}, {s['dataset_type']}, {s['output_size']} px, {s['n_styles']} styles, "
        f"encoder input {'x'.join(map(str, s['input_hw']))}, image {'x'.join(map(str, s['image_hw']))}",
        f"batch      profile {'/'.join(map(str, d['batch_profile']))} (min/opt/max), precision "
        f"{d['precision']}, opset {d['opset'] or '?'}",
    ]
    src = d.get("source")
    if isinstance(src, dict):
        lines.append(f"source     {src.get('checkpoint')} ({_sha(src.get('sha256'))})")
    elif src:
        lines.append(f"source     {src}")
    if d.get("versions"):
        lines.append("exported   " + ", ".join(f"{k} {v}" for k, v in d["versions"].items() if v is not None))
    lines.append("graphs")
    for name, g in {**d["graphs"], **d["variants"]}.items():
        ok = {None: "", True: "  [sha256 verified]", False: "  [SHA256 MISMATCH]"}[g["verified"]]
        miss = f"  [MISSING: {', '.join(g['missing'])}]" if g["missing"] else ""
        lines.append(f"  {name:<17} {' + '.join(g['files'])}  {_mib(g['bytes'])}  {_sha(g['sha256'])}{ok}{miss}")
    e = d["engines"]
    if not e["records"]:
        lines.append("engines    none (`restyle-rt build ARTIFACTS` makes them)")
    else:
        rt = e["runtime"]
        lines.append(
            "engines    "
            + (f"checked against {rt['flavour']} {rt['version']}" if rt else e["note"])
            + (f", GPU compute capability {e['device_cc']}" if e["device_cc"] else "")
        )
        for r in e["records"]:
            lines.append(
                f"  {r['graph']} {r['precision']:<5} {r['file']}  {_mib(r['bytes'])}  {r['trt_flavour']} "
                f"{r['trt_version']}  cc {','.join(r['compute_capabilities'] or []) or '?'}  batch "
                f"{'/'.join(map(str, r['profile'] or [])) or '?'}"
            )
            lines.append(f"    {r['status']}: {r['detail']}")
    lines += _render_int8(d["int8"]) + _render_parity(d["parity"])
    return lines


def _render_int8(q: dict | None) -> list[str]:
    if not q:
        return ["int8       none (`restyle-rt calibrate ARTIFACTS` makes Q/DQ graphs)"]
    data = q.get("data") or {}
    lines = [
        f"int8       method {q['method']}; {data.get('count', '?')} calibration images x "
        f"{data.get('loop_steps', '?')} loop steps, {data.get('held_out', '?')} held out "
        f"({data.get('source', '?')})"
    ]
    for g in sorted(set(q["kept_layers"]) | set(q["graphs"]) | set(q["not_shipped"])):
        kept = q["kept_layers"].get(g, [])
        state = (
            f"shipped ({', '.join(q['graphs'][g])}), meets ship bar: {'yes' if q['meets_ship_bar'].get(g) else 'no'}"
            if g in q["graphs"]
            else f"not shipped: {q['not_shipped'].get(g, '?')}"
        )
        lines.append(f"  {g:<17} {state}; {len(kept)} layer(s) kept in FP32{': ' + ', '.join(kept) if kept else ''}")
    for label, encs in q["accuracy"].items():
        for enc, rows in encs.items():
            cells = ", ".join(f"{r['latent_rel_l2']:.2e}/{_db(r['image_psnr_db'])}" for r in rows)
            lines.append(f"  accuracy {label} [{enc}] per step (latent rel-L2 / image PSNR): {cells}")
    where = q.get("measured_on")
    here = {True: "this CPU", False: "another CPU: `precision auto` stays FP32 here", None: "CPU not recorded"}[
        q["measured_on_this_cpu"]
    ]
    lines.append(f"  measured on {where.get('cpu', '?') if where else '?'} ({here})")
    return lines


def _render_parity(p: dict | None) -> list[str]:
    if not p:
        return ["parity     none recorded"]
    lines = ["parity     measured at export (rel-L2 / PSNR against PyTorch)"]
    for graph, kinds in p.items():
        if graph == "inputs":
            continue
        for kind, outs in kinds.items():
            cells = ", ".join(
                f"{o} {r['rel_l2']:.2e}" + (f"/{_db(r['psnr_db'])}" if o in ("image", "feedback") else "")
                for o, r in outs.items()
                if r.get("rel_l2") is not None
            )
            lines.append(f"  {graph:<9} {kind:<18} {cells}")
    return lines
