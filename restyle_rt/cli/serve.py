"""``restyle-rt serve`` and ``restyle-rt triton-repo``. Registration imports nothing heavy (no PyTriton)."""

from __future__ import annotations

import argparse

from ..errors import EXIT_OK
from .args import BackendHelpFormatter, add_artifacts, add_backend, add_out_dir

DEFAULT_MAX_ITERS = 20  # == protocol.DEFAULT_MAX_ITERS (protocol imports numpy; registration must stay light)
IMAGE_FORMATS = ("raw", "png", "jpeg")  # == protocol.IMAGE_FORMATS


def register(subparsers) -> None:
    """Add the ``serve`` and ``triton-repo`` subcommands to ``restyle-rt``."""
    p = subparsers.add_parser(
        "serve",
        formatter_class=BackendHelpFormatter,
        help="serve an artifacts directory on Triton Inference Server (PyTriton; [serve] extra)",
        description="Serve one artifacts directory as the Triton model `restyle` (KServe v2 HTTP and gRPC, dynamic "
        "batching, health, metrics). Loopback only unless --host says otherwise. Needs the [serve] "
        "extra (it pins numpy<2; install it in its own venv).",
    )
    add_artifacts(p)
    add_backend(p)
    p.add_argument("--threads", type=int, default=None, metavar="N", help="ORT intra-op threads per instance")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default PORT+1)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port (default PORT+2)")
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=2000,
        metavar="US",
        help="longest time the dynamic batcher holds a request to grow a batch (default 2000)",
    )
    p.add_argument(
        "--max-queue-size",
        type=int,
        default=64,
        metavar="N",
        help="requests queued beyond this are rejected at once with UNAVAILABLE/503 (default 64)",
    )
    p.add_argument(
        "--timeout-ms",
        type=int,
        default=30000,
        metavar="MS",
        help="default queue timeout per request; clients may override it (default 30000, 0: none)",
    )
    p.add_argument(
        "--max-iters",
        type=int,
        default=DEFAULT_MAX_ITERS,
        metavar="N",
        help=f"largest `iters` a request may ask for (default {DEFAULT_MAX_ITERS})",
    )
    p.add_argument("--instances", type=int, default=1, metavar="N", help="model instances (default 1)")
    p.add_argument(
        "--drain-timeout",
        type=int,
        default=10,
        metavar="S",
        help="on SIGTERM/SIGINT, wait at most this long for in-flight requests (default 10)",
    )
    p.add_argument(
        "--image-format",
        choices=IMAGE_FORMATS,
        default="raw",
        help="images answered as raw UINT8 pixels (`image`) or PNG/JPEG file bytes (`image_encoded`) "
        "when a request sends no `image_format` (default raw)",
    )
    p.set_defaults(func=run_serve)

    r = subparsers.add_parser(
        "triton-repo",
        help="write a Triton model repository (encoder, synthesis, BLS `restyle`) for scale-out",
        description="Write a standard Triton model repository for NVIDIA's Triton container: `encoder` and "
        "`synthesis` (tensorrt_plan when engines are built, else onnxruntime_onnx) and a Python-backend "
        "BLS model `restyle` that drives the loop with the same tensors as `restyle-rt serve`.",
    )
    add_artifacts(r)
    add_out_dir(r, help="model repository directory to write")
    r.add_argument(
        "--graphs",
        choices=("auto", "tensorrt_plan", "onnxruntime_onnx", "python"),
        default="auto",
        help="how encoder/synthesis are served (default auto: tensorrt_plan when engines are built, "
        "else onnxruntime_onnx; python: ONNX Runtime inside the Python backend)",
    )
    r.add_argument(
        "--precision",
        choices=("fp16", "fp32"),
        default="fp16",
        help="which built engines to use for tensorrt_plan (default fp16)",
    )
    r.add_argument("--instances", type=int, default=1, metavar="N", help="instances per model (default 1)")
    r.add_argument(
        "--kind",
        choices=("KIND_GPU", "KIND_CPU"),
        default=None,
        help="instance kind (default: GPU for tensorrt_plan, CPU otherwise)",
    )
    r.add_argument("--max-queue-delay-us", type=int, default=2000, metavar="US", help="dynamic batcher delay")
    r.add_argument("--max-queue-size", type=int, default=64, metavar="N", help="bounded queue of `restyle`")
    r.add_argument("--timeout-ms", type=int, default=30000, metavar="MS", help="default queue timeout of `restyle`")
    r.add_argument("--max-iters", type=int, default=DEFAULT_MAX_ITERS, metavar="N", help="largest `iters` accepted")
    r.add_argument(
        "--image-format",
        choices=IMAGE_FORMATS,
        default="raw",
        help="`restyle`'s image answer when a request sends no `image_format` (default raw)",
    )
    r.add_argument(
        "--no-warmup",
        action="store_true",
        help="no `model_warmup` in the encoder/synthesis configs (default: one all-zeros request at load)",
    )
    r.add_argument("--overwrite", action="store_true", help="replace an existing repository directory")
    r.set_defaults(func=run_triton_repo)


def run_serve(args: argparse.Namespace) -> int:
    """Do ``serve``: runs the server until SIGTERM / SIGINT."""
    from ..serve.server import ServeConfig, Server

    cfg = ServeConfig(
        artifacts=args.artifacts,
        backend=args.backend,
        threads=args.threads,
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port if args.grpc_port is not None else args.port + 1,
        metrics_port=args.metrics_port if args.metrics_port is not None else args.port + 2,
        max_queue_delay_us=args.max_queue_delay_us,
        max_queue_size=args.max_queue_size,
        timeout_ms=args.timeout_ms,
        max_iters=args.max_iters,
        instances=args.instances,
        drain_timeout_s=args.drain_timeout,
        image_format=args.image_format,
    )
    with Server(cfg) as srv:
        srv.wait()
    return EXIT_OK


def run_triton_repo(args: argparse.Namespace) -> int:
    """Do ``triton-repo``: writes the model repository and prints what it holds."""
    from ..serve.repo import RepoConfig, write_repository

    cfg = RepoConfig(
        graphs=args.graphs,
        precision=args.precision,
        instances=args.instances,
        kind=args.kind,
        max_queue_delay_us=args.max_queue_delay_us,
        max_queue_size=args.max_queue_size,
        timeout_ms=args.timeout_ms,
        max_iters=args.max_iters,
        image_format=args.image_format,
        warmup=not args.no_warmup,
    )
    out = write_repository(args.artifacts, args.out, cfg, overwrite=args.overwrite)
    for line in out.summary():
        print(line)
    return EXIT_OK
