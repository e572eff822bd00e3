"""`ingot ls`, `inspect`, `verify` and `gc`: the artifacts in the store."""

from __future__ import annotations

import argparse
from pathlib import Path

from ingot.cli.arguments import add_command, positive_float
from ingot.cli.locate import find_artifact, open_store
from ingot.cli.printing import (
    out, print_artifacts, print_conversion_checks, print_manifest, print_tt_detection_prediction, print_tt_prediction,
    print_verification,
)  # fmt: skip
from ingot.errors import IngotError

ARTIFACT_HELP = "key, key prefix or path, or a built-in model name (its artifact: see ingot serve --help)"


def add_parsers(commands: argparse._SubParsersAction, cache_dir: argparse.ArgumentParser) -> None:
    add_command(commands, "ls", cmd_ls, "list cached artifacts", [cache_dir])
    sub = add_command(commands, "inspect", cmd_inspect, "show an artifact's manifest", [cache_dir])
    sub.add_argument("artifact", help=ARTIFACT_HELP)
    sub.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    sub.add_argument(
        "--kv-cache-gb", type=positive_float,
        help="the KV cache (GiB) to size the expected serving memory for, as ingot serve takes it (default 1)",
    )
    sub = add_command(
        commands, "verify", cmd_verify, "check an artifact's files and re-run its accuracy check", [cache_dir]
    )
    sub.add_argument("artifact", help=ARTIFACT_HELP)
    sub.add_argument(
        "--tt-policy", action="append", choices=["accuracy", "performance", "yolov4"],
        help="also predict accuracy under this Tenstorrent format policy (repeatable; a TT artifact gets every "
        "policy for its kind: accuracy and performance for language models, yolov4 for detectors)",
    )
    sub = add_command(
        commands, "gc", cmd_gc, "remove killed builds and artifacts this toolchain cannot load", [cache_dir]
    )
    sub.add_argument("--all", action="store_true", help="remove every artifact")


def cmd_ls(args: argparse.Namespace) -> None:
    artifacts = open_store(args).list()
    if not artifacts:
        out.print("no artifacts")
        return
    print_artifacts(artifacts)


def cmd_inspect(args: argparse.Namespace) -> None:
    from ingot.artifacts.manifest import Manifest

    path = find_artifact(open_store(args), args.artifact)
    manifest = Manifest.read(path)
    if args.json:
        print(manifest.model_dump_json(indent=2))
        return
    print_manifest(path, manifest)
    _print_memory(manifest, args.kv_cache_gb)


def _print_memory(manifest, kv_cache_gb: float | None) -> None:
    """The weights' bytes, and for a language model `ingot serve` can run, the memory it should hold after warm-up
    with the given KV cache."""
    from ingot.runtime.kv_sizing import DEFAULT_KV_CACHE_GB
    from ingot.runtime.servable import unservable_reason
    from ingot.runtime.serving_memory import (
        RUNTIME_OVERHEAD_BYTES, expected_serving_bytes, format_bytes, kv_cache_bytes, weight_bytes,
    )  # fmt: skip

    line = f"memory    weights {format_bytes(weight_bytes(manifest))}"
    if manifest.kind == "llm" and unservable_reason(manifest) is None:
        gib = DEFAULT_KV_CACHE_GB if kv_cache_gb is None else kv_cache_gb
        line += (
            f"; serving with --kv-cache-gb {gib:g}: {format_bytes(expected_serving_bytes(manifest, kv_cache_gb))} "
            f"expected (weights + KV cache {format_bytes(kv_cache_bytes(manifest, kv_cache_gb))} "
            f"+ runtime {format_bytes(RUNTIME_OVERHEAD_BYTES)})"
        )
    out.print(line)


def cmd_verify(args: argparse.Namespace) -> None:
    from ingot.artifacts.manifest import Manifest
    from ingot.compile.verify.stored import verify_stored
    from ingot.compile.tt.policies import get_policy, policies_for

    path = find_artifact(open_store(args), args.artifact)
    manifest = Manifest.read(path)
    for name in args.tt_policy or []:
        get_policy(name, manifest.kind)  # a policy for the other kind of model is refused before any work
    report = verify_stored(path)
    if report is None:  # a device target: its files check out, and running its programs needs the device
        out.print(
            f"{manifest.target} artifact: its programs need a Tenstorrent device; files and toolchain: ok "
            f"({len(manifest.files)} files); checking their conversion and predicting the accuracy of its number "
            "formats on the CPU"
        )
        _verify_tt_conversion(path, manifest)
        out.print(f"verification: {manifest.tt.device_verification if manifest.tt else 'not available'}")
    else:
        recorded = manifest.verification
        if recorded is not None and getattr(recorded, "weight_format", "fp32") != "fp32":
            out.print("recorded at compile, against the original float32 weights (which the artifact no longer holds):")
            print_verification(recorded)
        print_verification(report)
        if not report.passed:
            raise IngotError("verification failed")
    # a device artifact is predicted under every policy for its kind (its programs cannot run here)
    policies = args.tt_policy or ([] if report is not None else [p.name for p in policies_for(manifest.kind)])
    if policies:
        _print_tt_predictions(path, manifest, policies)


def _verify_tt_conversion(path: Path, manifest) -> None:
    """Run the TT programs' conversion check again, from the artifact alone; a failed one fails the command."""
    from ingot.compile.verify.tt_conversion import check_conversion, conversion_failure

    checked = check_conversion(path, manifest)
    print_conversion_checks(checked)
    failure = conversion_failure(checked)
    if failure:
        raise IngotError(failure)


def _print_tt_predictions(path: Path, manifest, policies: list[str]) -> None:
    """Predict, on the CPU, the artifact's accuracy under each TT format policy, and print it."""
    if manifest.kind == "detector":
        from ingot.compile.verify.predicted_detector import predict_tt_detector_accuracies

        for prediction in predict_tt_detector_accuracies(path, manifest, policies):
            print_tt_detection_prediction(prediction)
        return
    from ingot.compile.verify.predicted_llm import predict_tt_accuracies

    for prediction in predict_tt_accuracies(path, manifest, policies):
        print_tt_prediction(prediction)


def cmd_gc(args: argparse.Namespace) -> None:
    removed = open_store(args).gc(everything=args.all)
    for path in removed:
        out.print(f"removed {path}")
    out.print(f"{len(removed)} removed")
