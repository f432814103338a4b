"""`cutover`: serve, check-config, simulate, hash-key."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from config.loader import ConfigError, load_config
from gateway import cli_migrate
from gateway.auth import hash_key


def _banner(host: str, port: int, key_hint: str | None) -> str:
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/v1"
    key = key_hint or "YOUR_GATEWAY_KEY"
    message = '[{"role": "user", "content": "Hello"}]'
    return f"""cutover gateway listening on {base}

Try it with curl:
curl -s {base}/chat/completions -H 'Authorization: Bearer {key}' \\
     -H 'Content-Type: application/json' \\
     -d '{{"model": "gpt-4", "messages": {message}}}'

or with the OpenAI SDK (pip install openai):
python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{base}", api_key="{key}")
reply = client.chat.completions.create(model="gpt-4", messages={message})
print(reply.choices[0].message.content)
PY
"""


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from gateway.connection import ConnectionLimits
    from gateway.server import serve

    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    workers = args.workers or config.server.workers
    if not args.quiet:
        print(_banner(host, port, args.key_hint), file=sys.stderr, flush=True)
    serve(args.config, host, port, workers, config.server.shutdown_grace_s, ConnectionLimits.of(config.server))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(
        f"{args.config}: ok ({len(config.providers)} providers, {len(config.models)} models, "
        f"{len(config.meta_models)} meta-models, {len(config.migrations)} migrations)"
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import yaml
    from pydantic import ValidationError

    from simulator import SimulationSettings, run_simulator

    raw: dict[str, object] = {}
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
    overrides = {
        "first_token_ms": args.first_token_ms, "per_token_ms": args.per_token_ms, "jitter_ms": args.jitter_ms,
        "error_rate": args.error_rate, "output_tokens": args.output_tokens, "seed": args.seed,
    }
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = SimulationSettings.model_validate(raw)
    except ValidationError as exc:
        print(f"invalid simulator settings:\n{exc}", file=sys.stderr)
        return 2
    run_simulator(args.host, args.port, settings)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import main as demo_main

    scenarios = {1, 2} if args.scenario == "both" else {int(args.scenario)}
    return demo_main(args.degrade, scenarios)


def cmd_hash_key(args: argparse.Namespace) -> int:
    plain = args.key if args.key is not None else getpass.getpass("key to hash: ")
    print(hash_key(plain))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cutover", description="OpenAI-compatible LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--key-hint", help="client key to show in the start-up banner")
    serve.add_argument("--quiet", action="store_true", help="no start-up banner")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config")
    check.set_defaults(func=cmd_check_config)

    sim = sub.add_parser("simulate", help="run the bundled OpenAI-compatible simulator (not a real LLM)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9000)
    sim.add_argument("--config", help="YAML file of simulator settings")
    sim.add_argument("--first-token-ms", type=float)
    sim.add_argument("--per-token-ms", type=float)
    sim.add_argument("--jitter-ms", type=float)
    sim.add_argument("--error-rate", type=float)
    sim.add_argument("--output-tokens", type=int)
    sim.add_argument("--seed", type=int)
    sim.set_defaults(func=cmd_simulate)

    cli_migrate.add_parser(sub)

    demo = sub.add_parser("demo", help="watch a migration promote, then roll back, on simulated upstreams")
    demo.add_argument("--degrade", choices=["error", "latency", "cost", "quality"], default="error",
                      help="how the candidate degrades in scenario 2")
    demo.add_argument("--scenario", choices=["1", "2", "both"], default="both")
    demo.set_defaults(func=cmd_demo)

    hashk = sub.add_parser("hash-key", help="print the sha256 form of a client key for the config")
    hashk.add_argument("key", nargs="?")
    hashk.set_defaults(func=cmd_hash_key)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
