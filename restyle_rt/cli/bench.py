"""``restyle-rt bench``: latency, throughput, per-stage time and peak memory of every backend and baseline.

Registration imports nothing heavy (no torch, no onnxruntime). Examples::

    restyle-rt bench --preset church-256 --batch 1,4 --iters 5 --json benchmarks/cpu/church-256.json
    restyle-rt bench artifacts/ffhq --checkpoint ffhq.pt --backend ort,torch-official --plot lat.png
    restyle-rt bench --preset church-256 --backend openvino,ort --precision fp32,bf16 --batch 1,4 --iters 5

Every result also carries ``accuracy``: its loop's per-step latent rel-L2, image rel-L2 and image PSNR against
the FP32 reference loop (official-formulation torch with the checkpoint, else ort FP32).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ..errors import EXIT_OK
from .args import add_artifacts, add_early_exit, nonneg_int, positive_int, writable_file


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"values must be positive integers (>= 1), got {text!r}")
    return list(dict.fromkeys(vals))


def _names(text: str) -> list[str]:
    vals = [v.strip() for v in text.split(",") if v.strip()]
    if not vals:
        raise argparse.ArgumentTypeError("expected comma-separated backend names")
    return vals


def _precisions(text: str) -> list[str]:
    vals = [v.strip() for v in text.split(",") if v.strip()]
    if not vals:
        raise argparse.ArgumentTypeError("expected comma-separated precisions, e.g. fp32,bf16")
    return list(dict.fromkeys(vals))


def _preset(text: str) -> str:
    from ..bench.presets import PRESET_NAMES

    if text not in PRESET_NAMES:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; choose one of {', '.join(PRESET_NAMES)}")
    return text


def register(subparsers) -> None:
    """Add the ``bench`` subcommand to ``restyle-rt``."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark backends and torch baselines",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    src = p.add_mutually_exclusive_group(required=True)
    add_artifacts(src, optional=True)
    src.add_argument(
        "--preset",
        type=_preset,
        metavar="NAME",
        help="ffhq-1024 | cars-512 | church-256: random weights, built and exported on first use "
        "(cached under $RESTYLE_RT_CACHE, else $XDG_CACHE_HOME/restyle-rt, else ~/.cache/restyle-rt)",
    )
    p.add_argument(
        "--fitted",
        action="store_true",
        help="with --preset: the preset with its encoder fitted to its own generator (church-256), so the loop "
        "converges and each result's accuracy is also measured against known answers (built once, minutes)",
    )
    p.add_argument("--checkpoint", metavar="PT", help="source checkpoint of ARTIFACTS (enables the torch baselines)")
    p.add_argument(
        "--backend",
        type=_names,
        metavar="A,B",
        help="backends: runtime (ort, trt, ...) and baselines torch-official, torch "
        "(default: every available runtime backend plus the baselines)",
    )
    p.add_argument(
        "--precision",
        type=_precisions,
        metavar="fp32,bf16",
        help="precisions, each passed to the backends as precision=<value> (one run per value); a backend "
        "or baseline without that option runs only fp32 of the list and refuses a list without it "
        "(default: each backend's own default)",
    )
    p.add_argument(
        "--no-accuracy",
        action="store_true",
        help="skip the per-step accuracy against the FP32 reference loop (one untimed loop per configuration)",
    )
    p.add_argument("--batch", type=_int_list, default=[1, 4, 8], metavar="1,4,8", help="batch sizes")
    p.add_argument("--iters", type=_int_list, default=[1, 5, 10], metavar="1,5,10", help="ReStyle steps")
    p.add_argument("--warmup", type=nonneg_int, default=1, metavar="N", help="untimed loops per config (default 1)")
    p.add_argument("--repeat", type=positive_int, default=5, metavar="N", help="timed loops per config (default 5)")
    add_early_exit(p, "per-image early exit on the latent-update RMS (runtime backends; not official)")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="intra-op threads for ORT and torch alike (default: the CPUs available)",
    )
    p.add_argument(
        "--memory",
        action="store_true",
        help="also measure the runtime's peak memory vs weights + buffers, in fresh processes",
    )
    p.add_argument(
        "--profile-ort",
        type=positive_int,
        default=None,
        metavar="BATCH",
        help="also profile the ORT graphs per node at this batch (top ops by kernel time); the raw traces "
        "(Perfetto / chrome://tracing) are kept beside --json (OUT's name + .ort-profile.<graph>.json), else in a "
        "new temporary directory; their paths are printed",
    )
    p.add_argument("--json", metavar="OUT", type=writable_file, help="write the results as JSON")
    p.add_argument(
        "--plot",
        metavar="OUT.png",
        type=writable_file,
        help="latency per image vs batch, and speed against accuracy with the ship bar drawn (needs matplotlib)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar while a preset is built")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Do ``bench``: runs every configuration, prints the tables and writes --json / --plot."""
    from ..bench import report, runner, targets
    from ..errors import InputError

    art_dir, ckpt = args.artifacts, args.checkpoint
    if args.preset:
        from ..bench.presets import ensure_preset

        ckpt_p, art_p = ensure_preset(args.preset, progress=not args.no_progress, fitted=args.fitted)
        art_dir, ckpt = str(art_p), ckpt or str(ckpt_p)
    elif args.fitted:
        raise InputError("--fitted applies to --preset (a fitted checkpoint of your own: pass it as --checkpoint)")
    if ckpt is not None:
        _check_source(art_dir, ckpt)
    threads = args.threads or targets.default_threads()
    cfg = runner.BenchConfig(
        artifacts_dir=art_dir,
        checkpoint=ckpt,
        backends=targets.resolve_backends(args.backend, ckpt is not None),
        batches=args.batch,
        iters=args.iters,
        warmup=args.warmup,
        repeat=args.repeat,
        early_exit=args.early_exit,
        threads=threads,
        preset=args.preset,
        precisions=args.precision,
        accuracy=not args.no_accuracy,
    )
    machine = runner.machine_info(threads)
    results = runner.run(cfg, on_result=_progress)
    memory = None
    if args.memory:
        from ..bench.memory import measure_all

        memory = measure_all(art_dir, cfg.backends, cfg.batches, max(cfg.iters), threads, cfg.precisions)
    prof = None
    if args.profile_ort:
        from pathlib import Path

        from ..bench.profile import profile_ort

        beside = Path(args.json) if args.json else None  # the traces go next to the report
        prof = profile_ort(
            art_dir,
            args.profile_ort,
            max(cfg.iters),
            threads,
            trace_dir=beside.parent if beside else None,
            trace_stem=f"{beside.stem}.ort-profile" if beside else "ort-profile",
        )
    machine["load_avg_end"] = runner._load()
    doc = report.document(machine, command_line(args), _source(cfg), results, memory)
    if prof:
        doc["ort_profile"] = prof
    print(report.markdown_table(results))
    if memory:
        print()
        print(report.memory_table(memory))
    if prof:
        from ..bench.profile import profile_table

        print()
        print(profile_table(prof))
        print(
            "ORT profile traces (open in https://ui.perfetto.dev): " + ", ".join(prof["traces"].values()),
            file=sys.stderr,
        )
    if args.json:
        print(f"wrote {report.write_json(doc, args.json)}", file=sys.stderr)
    if args.plot:
        title = f"{args.preset or art_dir}: p50 latency per image ({threads} threads)"
        out = report.plot(results, args.plot, title)
        print(
            f"wrote {out}" if out else "no plot: matplotlib is not installed (pip install 'restyle-rt[bench]')",
            file=sys.stderr,
        )
    return EXIT_OK


def _check_source(art_dir: str, ckpt: str) -> None:
    """Refuse a --checkpoint that is not the one ARTIFACTS was exported from (torch baselines would compare
    different models); compares the file's sha256 with the manifest's ``source.sha256``."""
    from pathlib import Path

    from ..artifacts import read_manifest, sha256_file
    from ..errors import ArtifactError, InputError
    from ..manifest import Source

    try:
        src = read_manifest(art_dir).source
    except ArtifactError:
        return  # artifacts problems are reported, with their fix, when the artifacts are loaded
    want = src.sha256 if isinstance(src, Source) else None
    if not want:
        return
    if not Path(ckpt).is_file():
        raise InputError(f"--checkpoint {ckpt}: no such file")
    got = sha256_file(ckpt)
    if got != want:
        raise InputError(
            f"--checkpoint {ckpt} (sha256 {got[:12]}…) is not the checkpoint {art_dir} was exported "
            f"from ({src.checkpoint}, sha256 {want[:12]}…); pass that one"
        )


def _progress(rec: dict) -> None:
    print(
        f"  {rec['backend']:>14} {rec.get('precision') or '':>5}  batch {rec['batch']:>2}  iters {rec['iters']:>2}: "
        f"{rec['p50_per_image_s']:.3f} s/image (p50), load {rec['load_before']}",
        file=sys.stderr,
    )


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from the parsed arguments (so it is exact however bench was invoked)."""
    parts = ["restyle-rt", "bench"]
    parts += ["--preset", args.preset] if args.preset else [args.artifacts]
    if getattr(args, "fitted", False):
        parts.append("--fitted")
    for flag, val in (
        ("--checkpoint", args.checkpoint),
        ("--backend", args.backend),
        ("--precision", args.precision),
        ("--batch", args.batch),
        ("--iters", args.iters),
        ("--warmup", args.warmup),
        ("--repeat", args.repeat),
        ("--early-exit", args.early_exit),
        ("--threads", args.threads),
        ("--json", args.json),
        ("--plot", args.plot),
        ("--profile-ort", args.profile_ort),
    ):
        if val is not None:
            parts += [flag, ",".join(map(str, val)) if isinstance(val, list) else str(val)]
    if args.memory:
        parts.append("--memory")
    if args.no_accuracy:
        parts.append("--no-accuracy")
    return " ".join(shlex.quote(p) for p in parts)


def _source(cfg) -> dict:
    from ..artifacts import read_manifest
    from ..bench.memory import weights_bytes

    man = read_manifest(cfg.artifacts_dir)
    return {
        "artifacts": str(cfg.artifacts_dir),
        "checkpoint": cfg.checkpoint,
        "preset": cfg.preset,
        "spec": man.spec.to_dict(),
        "graph_bytes": weights_bytes(cfg.artifacts_dir),
        "export_seconds": man.export_seconds,
        "seed": cfg.seed,
    }
