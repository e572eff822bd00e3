"""`ingot push` and `ingot pull`: artifacts to and from an OCI registry, and the `--plain-http` option every command
that talks to one shares (`ingot serve oci://REF` too)."""

from __future__ import annotations

import argparse

from ingot.cli.arguments import add_command
from ingot.cli.artifacts import ARTIFACT_HELP
from ingot.cli.locate import find_artifact, open_store
from ingot.cli.printing import out

REF_HELP = "REGISTRY/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/ingot/smollm2-135m:KEY"
CREDENTIALS = (
    "Credentials: $INGOT_REGISTRY_USERNAME and $INGOT_REGISTRY_PASSWORD, else the docker config (docker login)."
)


def registry_parent() -> argparse.ArgumentParser:
    """`--plain-http`, for every command that talks to a registry."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--plain-http", action="store_true",
        help="talk plain HTTP to the registry (always so for localhost, 127.0.0.1 and ::1; else HTTPS)",
    )
    return parent


def add_parsers(commands: argparse._SubParsersAction, cache_dir: argparse.ArgumentParser) -> None:
    registry = registry_parent()
    sub = add_command(commands, "push", cmd_push, "push an artifact to an OCI registry", [cache_dir, registry])
    sub.epilog = CREDENTIALS
    sub.add_argument("artifact", help=ARTIFACT_HELP)
    sub.add_argument("ref", help=f"{REF_HELP}; the tag defaults to the artifact's key")
    sub = add_command(
        commands, "pull", cmd_pull, "pull an artifact from an OCI registry into the cache", [cache_dir, registry]
    )
    sub.epilog = CREDENTIALS
    sub.add_argument("ref", help=REF_HELP)
    sub.add_argument(
        "--check", action="store_true",
        help="download nothing: exit 0 if the registry has REF, 1 if it has not (for CI)",
    )


def cmd_push(args: argparse.Namespace) -> None:
    from ingot.artifacts.registry import push_artifact

    pushed = push_artifact(find_artifact(open_store(args), args.artifact), args.ref, plain_http=args.plain_http)
    out.print(f"pushed {pushed.ref} ({pushed.blobs} blobs, {pushed.bytes / 1e6:.1f} MB), manifest {pushed.digest}")


def cmd_pull(args: argparse.Namespace) -> int:
    from ingot.artifacts.registry import pull_artifact, tag_exists

    if args.check:
        present = tag_exists(args.ref, plain_http=args.plain_http)
        out.print(f"{args.ref}: {'in the registry' if present else 'not in the registry'}")
        return 0 if present else 1
    pulled = pull_artifact(open_store(args), args.ref, plain_http=args.plain_http)
    out.print(f"{'pulled' if pulled.downloaded else 'already in the cache:'} {pulled.key}  {pulled.path}")
    return 0
