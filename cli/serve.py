"""``anirender serve``: the neural shader service on HTTP (``service.serve``), or with
``--ray`` the same app as Ray Serve replicas on a Ray cluster (``service.ray_serve``).

The token is read from ``$ANIRENDER_SERVICE_TOKEN`` (preferred: a ``--token`` on the
command line shows in ``ps``). Ray is optional: it is imported only for ``--ray``."""

from __future__ import annotations

import os
import sys

from ..errors import AniRenderError
from ..service import protocol
from ..service.serve import serve

RAY_INSTALL = 'pip install "anirender[ray]"  (or: pip install "ray[serve]==2.60.0")'


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run the neural shader service (HTTP)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=protocol.DEFAULT_PORT, help="0 picks a free port"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--token",
        default=None,
        help=f"require this Bearer token. Prefer setting ${protocol.TOKEN_ENV} instead: "
        "a --token value shows in `ps` to every user of this computer",
    )
    parser.add_argument("--weights", default=None, help="weights name in the store, or a path")
    parser.add_argument(
        "--reenact-weights",
        default=None,
        help="head reenactment weights (.safetensors); default: the shipped small model",
    )
    parser.add_argument("--max-request-mb", type=float, default=256)
    parser.add_argument("--max-batch", type=int, default=8, help="frames per model call")
    parser.add_argument(
        "--max-cache-mb",
        type=float,
        default=2048,
        help="memory for cached sheet encodings; the least recently used go first",
    )
    parser.add_argument(
        "--exit-with-stdin", action="store_true", help="stop when stdin closes (add-on use)"
    )
    ray = parser.add_argument_group('Ray Serve (optional extra: pip install "anirender[ray]")')
    ray.add_argument(
        "--ray", action="store_true", help="serve as Ray Serve replicas on a Ray cluster"
    )
    ray.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (HOST:6379, ray://HOST:10001, or 'auto' for the one "
        "`ray start` began here); default: $RAY_ADDRESS, else a new local cluster",
    )
    ray.add_argument(
        "--replicas", default="1", help="number of replicas, or 'auto' to scale with the load"
    )
    ray.add_argument(
        "--gpus-per-replica", type=float, default=0.0, help="GPUs each replica reserves"
    )
    parser.set_defaults(func=_serve_command)


def _serve_command(args) -> int:
    if args.token:
        print(
            f"note: --token is visible to every user of this computer (ps); set "
            f"{protocol.TOKEN_ENV} instead.",
            file=sys.stderr,
            flush=True,
        )
    token = args.token or os.environ.get(protocol.TOKEN_ENV) or None
    if args.ray:
        return _serve_with_ray(args, token)
    if args.address or args.replicas != "1" or args.gpus_per_replica:
        raise AniRenderError("--address, --replicas and --gpus-per-replica go with --ray.")
    serve(**_service_options(args, token), max_cache_mb=args.max_cache_mb)
    return 0


def _service_options(args, token) -> dict:
    """What a local server and a Ray deployment take alike."""
    return {
        "host": args.host,
        "port": args.port,
        "device": args.device,
        "token": token,
        "weights": args.weights,
        "max_request_mb": args.max_request_mb,
        "max_batch": args.max_batch,
        "exit_with_stdin": args.exit_with_stdin,
        "reenact_weights": args.reenact_weights,
    }


def _serve_with_ray(args, token) -> int:
    try:
        # Ray: optional, loaded only for --ray
        from ..service.ray_serve import serve_with_ray
    except ImportError as exc:
        if not (exc.name or "").startswith("ray"):
            raise
        raise AniRenderError(
            f"--ray needs Ray Serve, which this Python lacks. Install it with {RAY_INSTALL}, "
            "or leave out --ray to serve from this machine alone."
        ) from None
    serve_with_ray(
        **_service_options(args, token),
        address=args.address,
        replicas=args.replicas,
        gpus_per_replica=args.gpus_per_replica,
    )
    return 0
