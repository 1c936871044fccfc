"""``restyle-rt serve``: one artifacts directory behind Triton Inference Server, through PyTriton.

One model, ``restyle`` (the contract is in :mod:`restyle_rt.serve.protocol`). Triton's dynamic batcher gathers
requests (preferred batch sizes from the artifacts' batch profile, a bounded queue delay); its queue is bounded
(``max_queue_size``: beyond it Triton rejects at once, HTTP 503 / gRPC UNAVAILABLE) and every request has a queue
timeout (clients may shorten or lengthen it with the ``timeout`` request parameter, in microseconds). One
execution runs the runtime's loop (:class:`restyle_rt.Inverter`, ORT or TensorRT backend) once per group of equal
loop arguments. Health (``/v2/health/live``, ``/v2/health/ready``) and Prometheus metrics (``:METRICS/metrics``)
are Triton's own. SIGTERM or SIGINT stop accepting work and drain in-flight requests for at most
``drain_timeout_s``.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Callable

import numpy as np

from . import env, protocol

log = logging.getLogger("restyle_rt")


@dataclasses.dataclass
class ServeConfig:
    """Everything ``restyle-rt serve`` is told.

    Attributes:
        artifacts: the artifacts directory.
        backend: runtime backend name (``auto``, ``ort``, ``trt``...).
        threads: ORT intra-op threads (None: the backend's default).
        host: address the HTTP and gRPC endpoints bind (loopback by default).
        port: HTTP port; gRPC listens on ``grpc_port`` and metrics on ``metrics_port``.
        max_queue_delay_us: how long the dynamic batcher may hold a request to grow a batch.
        max_queue_size: requests waiting beyond this are rejected at once (0: unbounded, not recommended).
        timeout_ms: default queue timeout of a request (0: none); requests may override it.
        max_iters: the largest ``iters`` a request may ask for.
        instances: model instances (each runs its own loop; on CPU keep 1 unless cores are idle).
        drain_timeout_s: how long shutdown waits for in-flight requests.
        image_format: how images are answered when a request does not say (``raw``, ``png``, ``jpeg``).
    """

    artifacts: str
    backend: str = "auto"
    threads: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_queue_delay_us: int = 2000
    max_queue_size: int = 64
    timeout_ms: int = 30000
    max_iters: int = protocol.DEFAULT_MAX_ITERS
    instances: int = 1
    drain_timeout_s: int = 10
    image_format: str = "raw"


def infer_function(inverter, max_iters: int, image_format: str = "raw") -> Callable:
    """The PyTriton inference callable: a list of requests in, one output dict (or error) per request out."""
    hw = inverter.spec.input_hw

    def invert(x, n_iters, return_steps, early_exit):
        return inverter.invert(x, n_iters=n_iters, return_steps=return_steps, early_exit=early_exit)

    def infer(requests):
        t0 = time.perf_counter()
        results = protocol.run_requests(invert, [r.data for r in requests], hw, max_iters, image_format)
        log.debug("execution: %d requests in %.1f ms", len(requests), 1e3 * (time.perf_counter() - t0))
        return [_error_response(r) if isinstance(r, protocol.RequestError) else r for r in results]

    return infer


def _error_response(e: Exception) -> dict:
    return {env.ERROR_KEY: np.array([str(e).encode("utf-8")], dtype=np.object_)}


def _tensors(rows):
    from pytriton.model_config import Tensor

    return [Tensor(name=n, dtype=d, shape=s, optional=o) for n, d, s, o in rows]


def model_config(cfg: ServeConfig, profile):
    """The PyTriton :class:`ModelConfig` of the ``restyle`` model."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, TimeoutAction

    policy = QueuePolicy(
        timeout_action=TimeoutAction.REJECT,
        default_timeout_microseconds=cfg.timeout_ms * 1000,
        allow_timeout_override=True,
        max_queue_size=cfg.max_queue_size,
    )
    batcher = DynamicBatcher(
        max_queue_delay_microseconds=cfg.max_queue_delay_us,
        preferred_batch_size=protocol.preferred_batch_sizes(profile),
        default_queue_policy=policy,
    )
    return ModelConfig(max_batch_size=profile.max, batcher=batcher)


def triton_config(cfg: ServeConfig):
    """The PyTriton :class:`TritonConfig`: endpoints, drain bound, quiet logs."""
    from pytriton.triton import TritonConfig

    return TritonConfig(
        http_address=cfg.host,
        http_port=cfg.port,
        grpc_address=cfg.host,
        grpc_port=cfg.grpc_port,
        metrics_address=cfg.host,
        metrics_port=cfg.metrics_port,
        exit_timeout_secs=cfg.drain_timeout_s,
        log_verbose=0,
    )


class Server:
    """A running ``restyle`` model on Triton; a context manager (start on enter, drain and stop on exit).

    Example::

        with Server(ServeConfig("artifacts/ffhq")) as srv:
            srv.wait()            # until SIGTERM / SIGINT
    """

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.inverters = []
        self.triton = None

    @property
    def inverter(self):
        """The first instance's :class:`~restyle_rt.Inverter` (each model instance has its own)."""
        return self.inverters[0] if self.inverters else None

    def start(self) -> Server:
        """Load the artifacts, start Triton and bind the model; returns once the model is ready."""
        from ..runtime.api import Inverter

        env.check()
        env.fix_libpython_path()
        env.install_proxy_patch()
        from pytriton.triton import Triton

        t0 = time.perf_counter()
        opts = {"threads": self.cfg.threads} if self.cfg.threads else {}
        for _ in range(max(1, self.cfg.instances)):  # one backend per instance: backends reuse output buffers
            self.inverters.append(Inverter.load(self.cfg.artifacts, backend=self.cfg.backend, **opts))
        t_loaded = time.perf_counter()
        inputs, outputs = protocol.io_table(self.inverter.spec)
        self.triton = Triton(config=triton_config(self.cfg))
        self.triton.bind(
            model_name=protocol.MODEL_NAME,
            infer_func=[infer_function(inv, self.cfg.max_iters, self.cfg.image_format) for inv in self.inverters],
            inputs=_tensors(inputs),
            outputs=_tensors(outputs),
            config=model_config(self.cfg, self.inverter.profile),
            strict=False,
        )
        self.triton.run()
        log.info(
            "serving %s (backend %s, batch profile %s) on http://%s:%d, grpc %s:%d, metrics :%d; "
            "ready in %.1f s (artifacts %.1f s, Triton %.1f s)",
            self.cfg.artifacts,
            self.inverter.backend.name,
            self.inverter.profile.to_list(),
            self.cfg.host,
            self.cfg.port,
            self.cfg.host,
            self.cfg.grpc_port,
            self.cfg.metrics_port,
            time.perf_counter() - t0,
            t_loaded - t0,
            time.perf_counter() - t_loaded,
        )
        return self

    def wait(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain (at most ``drain_timeout_s``) and stop."""

        def on_term(signum, _frame):
            log.info("signal %d: draining in-flight requests (at most %d s)", signum, self.cfg.drain_timeout_s)
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            self.triton.serve()  # returns on KeyboardInterrupt after Triton's own stop (which drains)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)

    def stop(self) -> None:
        """Drain and stop Triton, then release the backend. Idempotent."""
        if self.triton is not None:
            self.triton.stop()
            self.triton = None
        for inv in self.inverters:
            inv.close()
        self.inverters = []

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False
