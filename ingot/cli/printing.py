"""What the commands print: artifact listings, manifests, verification and accuracy reports, detections."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Column, Table

# Piped output (scripts, grep) gets whole rows, not a table squeezed to 80 columns with its cells cut short.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, highlight=False)


def print_artifacts(artifacts) -> None:
    """`ingot ls`: one row per stored artifact, with why it cannot be served if it cannot."""
    key = Column("key", no_wrap=True, min_width=24)  # whole, whatever the terminal's width: it is what users copy
    columns = ("model", "family", "target", "cpu isa", "weights", "activations", "size", "created", "status")
    table = Table(key, *columns, box=None)
    for artifact in artifacts:
        m = artifact.manifest
        size = sum(f.size for f in m.files.values()) if m else 0
        table.add_row(
            artifact.key,
            m.model.name if m else "?",
            m.model.family if m else "?",
            m.target if m else "?",
            (m.cpu.isa if m.cpu else "-") if m else "?",
            (m.options.get("weight_format", "fp32") if m.kind == "llm" else "-") if m else "?",
            (m.options.get("activation_dtype", "fp32") if m.kind == "llm" else "-") if m else "?",
            f"{size / 1e6:.1f} MB",
            m.created_at if m else "?",
            _status(artifact),
        )
    out.print(table)


def _status(artifact) -> str:
    """Why the artifact cannot be served here, or ok."""
    from ingot.artifacts.cpu_isa import missing_flags, missing_optional_flags

    cpu = artifact.manifest.cpu if artifact.manifest else None
    if artifact.problem:
        return artifact.problem
    if cpu and missing_flags(cpu):
        return f"needs {', '.join(missing_optional_flags(cpu)) or cpu.isa}, which this CPU lacks"
    return "ok"


def print_manifest(path: Path, manifest) -> None:
    """`ingot inspect`: what the artifact holds, its programs, and how it was verified."""
    m = manifest.model
    out.print(f"[bold]{manifest.key}[/bold]  {path}")
    out.print(f"model     {m.name} ({m.architecture}, from {m.source_kind})")
    out.print(f"target    {manifest.target}")
    if manifest.cpu:
        out.print(f"cpu isa   {_cpu_isa(manifest.cpu)}")
    if manifest.detector:
        d = manifest.detector
        out.print(f"input     {d.input_size}x{d.input_size} RGB, letterboxed; batch sizes {d.batch_sizes}")
        out.print(f"classes   {len(d.class_names)} ({', '.join(d.class_names[:4])}, ...); strides {d.strides}")
        out.print(f"anchors   {' '.join(f'{w}x{h}' for w, h in d.anchors)}")
    else:
        out.print(
            f"buckets   prefill tokens {manifest.buckets.prefill_tokens}, decode batch {manifest.buckets.decode_batch}"
        )
        kv = manifest.kv_cache
        out.print(f"context   {manifest.buckets.max_context} tokens, KV cache {kv.dtype} in blocks of {kv.block_size}")
        if kv.paged:
            paged = kv.paged
            out.print(
                f"kv cache  per layer, {paged.inputs[0]}..{paged.inputs[-1]} (keys, values) {paged.shape} [blocks, "
                f"kv_heads, block_size, head_dim], donated, written in place by {paged.prefill_writes} (prefill) "
                f"and {paged.decode_writes} (decode)"
            )
        out.print(f"weights   {weight_formats(manifest)}{_activations(manifest)}")
    out.print("toolchain " + ", ".join(f"{k} {v}" for k, v in manifest.toolchain.items()))
    programs = Table("program", "kind", "batch", "tokens", "inputs", "file", box=None)
    for p in manifest.programs:
        shapes = ", ".join(f"{t.name}{list(t.shape)}" for t in p.inputs)
        programs.add_row(p.name, p.kind, _range(p.batch), _range(p.tokens) if p.tokens else "-", shapes, p.file)
    out.print(programs)
    if manifest.tt:
        print_tt_build(manifest)
    if manifest.verification:
        print_verification(manifest.verification)


def weight_formats(manifest) -> str:
    """A language model's --weight-format and what it stored: how many linears in each format, and the tensors
    rounded to one."""
    choice = manifest.options.get("weight_format", "fp32")
    if manifest.tt:
        return f"{choice}: {_tt_weight_formats(manifest)}"
    linears: dict[str, int] = {}
    for packed in manifest.weights.packed.values():
        linears[packed.format.value] = linears.get(packed.format.value, 0) + len(packed.weights)
    parts = [f"{count} {fmt}" for fmt, count in sorted(linears.items())]
    line = f"{choice}: linears " + ", ".join(parts) if parts else choice
    rounded: dict[str, int] = {}
    for fmt in manifest.weights.rounded.values():
        rounded[fmt.value] = rounded.get(fmt.value, 0) + 1
    if rounded:
        line += "; other tensors rounded to " + ", ".join(f"{fmt} ({n})" for fmt, n in sorted(rounded.items()))
    return line


def _activations(manifest) -> str:
    """What the weights line adds for --activation-dtype bf16: the linears' inputs rounded (nothing for fp32)."""
    dtype = manifest.options.get("activation_dtype", "fp32")
    return "" if dtype == "fp32" else f"; the linears' inputs rounded to {dtype} (--activation-dtype {dtype})"


def _tt_weight_formats(manifest) -> str:
    """How many weights a TT artifact's binaries read in each format."""
    held = {name: fmt for p in manifest.programs if p.tt for name, fmt in p.tt.weight_formats.items()}
    if not held:
        return "weights in the binary not recorded (built before ingot marked them as parameters)"
    counts: dict[str, int] = {}
    for fmt in held.values():
        counts[fmt.value] = counts.get(fmt.value, 0) + 1
    listing = ", ".join(f"{n} {fmt}" for fmt, n in sorted(counts.items()))
    return f"weights in the binary {listing} (parameters, converted once when they load)"


def _cpu_isa(cpu) -> str:
    """The ISA an artifact needs (and any flag beyond it an option chose), and whether this CPU has it."""
    from ingot.artifacts.cpu_isa import OPTIONAL_FLAGS, host_isa, missing_flags

    missing = missing_flags(cpu)
    verdict = f"this CPU ({host_isa() or 'neither avx2 nor avx512'}) " + (
        "has it" if not missing else f"[red]lacks {', '.join(missing)}[/red]"
    )
    extra = "".join(f" + {flag}" for flag in cpu.flags if flag in OPTIONAL_FLAGS)
    return f"{cpu.isa}{extra} (-march={cpu.march}; {verdict})"


def print_tt_build(manifest) -> None:
    """A Tenstorrent artifact's descriptor, programs, conversion check, device verification, and the accuracy
    predicted when it was built."""
    if manifest.tt.descriptor:
        print_tt_descriptor(manifest.tt.descriptor)
    print_tt_programs(manifest)
    print_conversion_checks(manifest)
    out.print(f"verification: {manifest.tt.device_verification}")
    for prediction in manifest.tt.predicted:
        print_tt_detection_prediction(prediction)


def print_tt_descriptor(descriptor) -> None:
    """The system descriptor compiled against, and where it is from (a re-stamped one: from where, what changed)."""
    out.print(f"system descriptor {descriptor.file} (sha256 {descriptor.sha256[:16]}...): {descriptor.origin}")
    stamp = descriptor.restamped
    if stamp:
        out.print(f"  re-stamped from {stamp.repository} {stamp.path} at {stamp.commit[:10]}")
        out.print(
            f"  original sha256 {stamp.original_sha256[:16]}..., {stamp.license}; one field changed: "
            f"{stamp.field} {stamp.original[:12]}... -> {stamp.replacement[:12]}..."
        )


def print_tt_programs(manifest) -> None:
    """Per program: its status and the TTNN ops it lowered to (bookkeeping ops counted apart, activations fused into
    another op counted as their own, marked "(fused)")."""
    from ingot.compile.tt.ops import BOOKKEEPING, is_fused

    tt = manifest.tt.spec
    title = f"TT-NN programs for {tt['device']} (optimization level {manifest.programs[0].tt.optimization_level})"
    table = Table("program", "status", "ops", "TTNN compute ops (count)", box=None, title=title)
    for p in manifest.programs:
        info = p.tt
        compute = {op: n for op, n in info.ttnn_ops.items() if op not in BOOKKEEPING}
        listing = ", ".join(f"{op.removeprefix('ttnn.')} {n}" for op, n in compute.items())
        if info.status != "lowered":
            listing = "not lowered: " + ", ".join(info.unlowered_ops)
        ops = sum(n for op, n in info.ttnn_ops.items() if not is_fused(op))
        table.add_row(p.name, info.status, str(ops), listing)
    out.print(table)


def print_conversion_checks(manifest) -> None:
    """Per program: its JAX function on JAX's CPU backend against its torch program, output by output."""
    checked = [p for p in manifest.programs if p.tt and p.tt.conversion]
    if not checked:
        out.print("conversion check: none recorded (an artifact built before ingot checked TT conversions)")
        return
    title = "conversion check: each program's JAX function (what was lowered) on JAX's CPU backend vs its torch program"
    table = Table("program", "output", "PCC", "max abs error", "result", box=None, title=title)
    allowed = manifest.options.get("allow_unverified")
    for p in checked:
        check = p.tt.conversion
        verdict = "[green]passed[/green]" if check.passed else "[red]FAILED[/red]"
        if not check.passed and allowed:
            verdict += " (recorded: --allow-unverified)"
        for i, (name, agreement) in enumerate(check.outputs.items()):
            shown = f"{name} (written slots)" if name == "kv_cache" else name
            table.add_row(
                p.name if i == 0 else "", shown, f"{agreement.pcc:.8f}", f"{agreement.max_abs_error:.3g}",
                f"{verdict} (>= {check.min_pcc})" if i == 0 else "",
            )  # fmt: skip
    out.print(table)


def _range(bounds: tuple[int, int]) -> str:
    return str(bounds[0]) if bounds[0] == bounds[1] else f"{bounds[0]}..{bounds[1]}"


def print_tt_prediction(report) -> None:
    tt = report.tenstorrent
    reported = f"{tt.reported_model} reported by tt-metal" if tt.reported_top1 is not None else ""
    table = Table(
        "metric",
        "predicted",
        "Tenstorrent",
        box=None,
        title=f"predicted TT accuracy, {report.policy} policy ({report.description}), against {report.reference}",
    )
    table.add_row("logits PCC", f"{report.pcc:.6f}", f">= {tt.min_pcc}")
    table.add_row("max abs error", f"{report.max_abs_error:.3g}", "")
    top1 = f"{tt.reported_top1:.0%} ({reported})" if tt.reported_top1 is not None else ""
    top5 = f"{tt.reported_top5:.0%} ({reported})" if tt.reported_top5 is not None else ""
    table.add_row("top-1 agreement", f"{report.top1_agreement:.2%}", top1)
    table.add_row("top-5 agreement", f"{report.top5_agreement:.2%}", top5)
    table.add_row("tokens", f"{report.num_tokens} teacher-forced", "")
    table.add_row("PCC", "[green]meets 0.99[/green]" if report.meets_tt_pcc else "[red]below 0.99[/red]", "")
    out.print(table)


def print_tt_detection_prediction(report) -> None:
    tt = report.tenstorrent
    table = Table(
        "metric",
        "predicted",
        "Tenstorrent (tt-metal YOLOv4)",
        box=None,
        title=f"predicted TT accuracy, {report.policy} policy ({report.description}), against {report.reference}",
    )
    boxes_bar = f">= {tt.min_box_pcc} (Blackhole: >= {tt.min_box_pcc_blackhole})"
    table.add_row("boxes PCC", f"{report.box_pcc:.6f}", boxes_bar)
    table.add_row("confidences PCC", f"{report.confidence_pcc:.6f}", f">= {tt.min_confidence_pcc}")
    table.add_row("head maps PCC", f"{report.head_pcc:.6f}", "")
    table.add_row("max abs error", f"{report.max_abs_error:.3g}", "")
    table.add_row("images", f"{report.images} at {report.input_size}x{report.input_size}", "")
    verdict = "[green]meets[/green]" if report.meets_tt_pcc else "[red]below[/red]"
    table.add_row("PCC", f"{verdict} {tt.min_box_pcc} / {tt.min_confidence_pcc}", "")
    out.print(table)


def print_verification(report) -> None:
    from ingot.artifacts.manifest import DetectionVerificationReport

    if isinstance(report, DetectionVerificationReport):
        _print_detection_verification(report)
        return
    title = f"verification against {report.reference}"
    if report.weight_format != "fp32":
        title += f", weights {report.weight_format}"
    table = Table("metric", "value", "threshold", box=None, title=title)
    tt = report.tenstorrent
    if tt:  # a smaller weight format: shown beside what tt-metal reports for its modes
        table.add_column(f"tt-metal reports ({tt.reported_model})")
    top1, top5 = _reported_by_tt(tt)
    table.add_row("logits PCC", f"{report.pcc:.7f}", f">= {report.min_pcc}", *([f">= {tt.min_pcc}"] if tt else []))
    table.add_row("max abs error", f"{report.max_abs_error:.3g}", "", *([""] if tt else []))
    top1_bar = f">= {report.min_top1:.0%}" if report.min_top1 else ""
    table.add_row("top-1 agreement", f"{report.top1_agreement:.2%}", top1_bar, *([top1] if tt else []))
    table.add_row("top-5 agreement", f"{report.top5_agreement:.2%}", "", *([top5] if tt else []))
    for name, value in report.programs.items():
        table.add_row(f"PCC {name}", f"{value:.7f}", f">= {report.min_pcc}", *([""] if tt else []))
    tokens = f"{report.num_tokens} ({report.prefill_tokens} prefill + {report.decode_steps} decode)"
    table.add_row("tokens", tokens, "", *([""] if tt else []))
    if report.passed:
        result = "[green]passed[/green]"
    elif report.allowed_below_bar:
        result = "[yellow]below the bar, published with --allow-low-accuracy[/yellow]"
    else:
        result = "[red]FAILED[/red]"
    table.add_row("result", result, "", *([""] if tt else []))
    out.print(table)


def _reported_by_tt(tt) -> tuple[str, str]:
    """tt-metal's top-1 and top-5 for the report's mode, or for both modes when the report is not one of them."""
    from ingot.compile.verify.tt_acceptance import TT_REPORTED

    if tt is None:
        return "", ""
    if tt.reported_top1 is not None:
        return f"{tt.reported_top1:.0%}", f"{tt.reported_top5:.0%}"
    return tuple(", ".join(f"{numbers[i]:.0%} {mode}" for mode, numbers in TT_REPORTED.items()) for i in (0, 1))


def _print_detection_verification(report) -> None:
    table = Table("metric", "value", "threshold", box=None, title=f"verification against {report.reference}")
    table.add_row("boxes PCC", f"{report.box_pcc:.7f}", f">= {report.min_box_pcc}")
    table.add_row("confidences PCC", f"{report.confidence_pcc:.7f}", f">= {report.min_confidence_pcc}")
    table.add_row("max abs error", f"{report.max_abs_error:.3g}", "")
    for name, value in report.programs.items():
        table.add_row(f"PCC {name}", f"{value:.7f}", f">= {report.min_box_pcc}")
    if report.onnx_pcc is not None:
        table.add_row("PCC ONNX (onnxruntime)", f"{report.onnx_pcc:.7f}", f">= {report.min_onnx_pcc}")
    table.add_row("images", f"{report.images} at {report.input_size}x{report.input_size}", "")
    table.add_row("result", "[green]passed[/green]" if report.passed else "[red]FAILED[/red]", "")
    out.print(table)


def print_detections(name: Path, result) -> None:
    """`ingot detect`: one image's detections as a table."""
    table = Table("class", "score", "box (x1, y1, x2, y2)", box=None,
                  title=f"{name}: {len(result.detections)} detections")  # fmt: skip
    for d in result.detections:
        table.add_row(d.class_name, f"{d.score:.3f}", ", ".join(f"{v:.0f}" for v in d.box))
    out.print(table)


def print_device_report(report) -> None:
    """`ingot inspect --device`: a TT artifact's programs on one Tenstorrent device, as roofline lower bounds, its
    memory fit, and Tenstorrent's published targets beside them (targets, never measurements)."""
    from ingot.compile.tt.published_targets import SOURCE

    peaks = report.peaks
    hifi4 = peaks.matmul_flops_per_second("hifi4", 1) / 1e12
    title = (
        f"model specs on {peaks.target} ({peaks.arch}, {peaks.chips} chip{'s' if peaks.chips > 1 else ''}; per chip "
        f"{peaks.worker_cores} worker cores, {peaks.dram_gb_s:g} GB/s DRAM, {hifi4:.0f} TFLOP/s at HiFi4): "
        "roofline lower bounds from the TTNN programs, not measurements"
    )
    table = Table(
        "program", "chips", "ops", "matmul GFLOP", "vector MFLOP", "DRAM MB", "compute ms", "memory ms",
        "lower bound ms", "bound", box=None, title=title,
    )  # fmt: skip
    for p in report.programs:
        table.add_row(
            p.name, str(p.chips), str(p.ops), f"{p.matmul_flops / 1e9:.3f}", f"{p.vector_flops / 1e6:.2f}",
            f"{p.dram_bytes / 1e6:.1f}", f"{p.compute_seconds * 1e3:.3f}", f"{p.memory_seconds * 1e3:.3f}",
            f"{p.seconds * 1e3:.3f}", "compute" if p.compute_seconds > p.memory_seconds else "memory",
        )  # fmt: skip
    out.print(table)
    for tokens, seconds in sorted(report.ttft_seconds().items()):
        out.print(f"TTFT >= {seconds * 1e3:.2f} ms for a prompt of up to {tokens} tokens (its prefill program)")
    for batch, rate in sorted(report.tokens_per_second_per_user().items()):
        out.print(f"decode batch {batch}: <= {rate:.1f} tokens/s/user")
    for batch, rate in sorted(report.images_per_second().items()):
        out.print(f"batch {batch}: <= {rate:.1f} images/s")
    m = report.memory
    chips = max(p.chips for p in report.programs)
    dram = f"{peaks.target}'s {_size(m.dram_bytes)} of DRAM"
    if chips < peaks.chips:
        dram += f" (of the {chips} of its {peaks.chips} chips the programs run on)"
    if m.kv_bytes_per_token:
        verdict = "[green]fits[/green]" if m.fits else "[red]does not fit[/red]"
        out.print(
            f"memory: weights {_size(m.weight_bytes)} + KV cache for {m.concurrency} users x {m.context} tokens "
            f"{_size(m.kv_bytes)} ({m.kv_bytes_per_token} B a token) {verdict} in {dram}; "
            f"room for {m.kv_tokens_that_fit:,} tokens of KV cache beside the weights"
        )
    else:
        verdict = "[green]fit[/green]" if m.fits else "[red]do not fit[/red]"
        out.print(f"memory: weights {_size(m.weight_bytes)} {verdict} in {dram}")
    if not report.targets:
        out.print(f"Tenstorrent publishes no {report.kind} target for {peaks.target} in {SOURCE}")
        return
    per_user = "tokens/s/user" if report.kind == "llm" else "images/s"
    first = "TTFT ms (128 tokens)" if report.kind == "llm" else "latency ms"
    targets = Table(
        "model", first, per_user, "max concurrency", "max context", "stack", box=None,
        title=f"Tenstorrent's published targets on {peaks.target} (targets, not measurements; {SOURCE})",
    )  # fmt: skip
    for t in report.targets:
        targets.add_row(
            t.model, f"{t.ttft_ms:g}", f"{t.per_user:g}", str(t.max_concurrency), str(t.max_context or "-"), t.stack
        )
    out.print(targets)


def _size(count: int) -> str:
    """Decimal units down to kB: a tiny test model's weights are a few hundred kB."""
    if count < 1e6:
        return f"{count / 1e3:.1f} kB"
    return f"{count / 1e6:.1f} MB" if count < 1e9 else f"{count / 1e9:.2f} GB"
