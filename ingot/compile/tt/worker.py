"""The child process that drives the TT PJRT plugin: ``python -m ingot.compile.tt.worker JOB.json``.

For each program in the job: load the saved ExportedProgram (weights replaced by zero-stride stand-ins:
only their shapes matter), convert it to a JAX function with torchax, lower it for the ``tt`` device with
abstract inputs, and compile it with the plugin in compile-only mode, which writes a ``.ttnn`` flatbuffer
and MLIR dumps. The same JAX function is exported for JAX's CPU backend (``NAME.jax``), so that the conversion
check (verify/tt_conversion.py) runs what was lowered. Several workers share a job: each program goes to the first
worker that claims it (a file in the job's claims directory), which waits for the parent to have saved it (the parent
may still be capturing it). One JSON line per program goes to the worker's results file; a ``start`` line before each
compile lets the parent name the program if the plugin aborts the process.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path

OUTPUT_FILES = {"ttnn": ".ttnn", "ttir_mlir": ".ttir.mlir", "ttnn_mlir": ".ttnn.mlir"}
JAX_PROGRAM_SUFFIX = ".jax"
SAVED_POLL_SECONDS = 0.2


def _newest(directory: Path, pattern: str) -> Path | None:
    found = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _tensor_specs(names, values, to_jax_dtype) -> list[dict]:
    return [{"name": n, "dtype": str(to_jax_dtype(v.dtype)), "shape": list(v.shape)} for n, v in zip(names, values)]


def _output_names(out_avals, user_outputs: list[str], inputs: list) -> list[str]:
    """torchax returns each input the program updates in place (functionalized), then the user outputs;
    an updated input is named by the input of the same shape and dtype."""
    leading = len(out_avals) - len(user_outputs)
    names, unused = [], list(inputs)
    for aval in out_avals[:leading]:
        match = next((n for n, a in unused if a.shape == aval.shape and a.dtype == aval.dtype), None)
        unused = [(n, a) for n, a in unused if n != match]
        names.append(f"{match} (updated)" if match else "updated input")
    return names + user_outputs


def _export_for_cpu(fn, states: list, weight_names: list[str], avals: list, user_avals: tuple, program: dict) -> str:
    """Export ``fn`` for JAX's CPU backend as ``NAME.jax`` in the output directory; returns the file's name.

    torchax passes the program's lifted constants after its named weights; their values are in the saved program
    (small tensors), so the export holds them and takes the named weights and the user inputs, as the artifact
    stores them."""
    import jax
    import numpy as np

    constants = [jax.numpy.asarray(np.asarray(c)) for c in states[len(weight_names):]]

    def converted(weights, inputs):
        return fn(list(weights) + constants, inputs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export = jax.export.export(jax.jit(converted), platforms=("cpu",))
        exported = export(avals[: len(weight_names)], user_avals)
    name = f"{program['name']}{JAX_PROGRAM_SUFFIX}"
    (Path(program["out_dir"]) / name).write_bytes(exported.serialize())
    return name


def to_jax(exported):
    """``exported`` as torchax converts it (``exported_program_to_jax(exported, export_raw=True)``: weight names,
    weights and ``fn(states, inputs)``), decomposed in one pass instead of torchax's two.

    torchax decomposes to core ATen, then again with its own table; each pass re-traces the whole program (for a
    30-layer model, most of a program's lowering time). One table holding both gives the same core ATen graph."""
    import torch
    from torch.utils import _pytree as pytree
    from torchax import decompositions
    from torchax.export import JaxInterpreter, _extract_states_from_exported_program

    table = torch.export.default_decompositions()
    table.update(decompositions.DECOMPOSITIONS)
    decomposed = exported.run_decompositions(table)
    names, states = _extract_states_from_exported_program(decomposed)
    mutated_buffers = len(decomposed.graph_signature.buffers_to_mutate)

    def fn(states, inputs):
        args = pytree.tree_flatten((inputs, {}))[0]
        outputs = JaxInterpreter(decomposed.graph_module).run(*states, *args, enable_io_processing=False)
        return outputs[mutated_buffers:]

    return names, states, fn


def lower_one(program: dict, compiler_options: dict, device) -> dict:
    import jax
    import torch
    from torch.export.graph_signature import OutputKind
    from torchax.ops import mappings

    from ingot.compile.tt.arguments import with_marked_weights
    from ingot.compile.tt.ops import op_histogram, parameter_formats
    from ingot.compile.weightless import load_program

    def jax_dtype(dtype):
        # TT programs take 32-bit integers: JAX without x64 would truncate int64 anyway, so say so up front
        return jax.numpy.int32 if dtype == torch.int64 else mappings.t2j_dtype(dtype)

    start = time.perf_counter()
    exported = load_program(program["exported"])
    signature = exported.graph_signature
    weight_names, weights, fn = to_jax(exported)
    placeholders = [n for n in exported.graph.nodes if n.op == "placeholder"]
    user = [
        (node.name, node.meta["val"])
        for node, spec in zip(placeholders, signature.input_specs)
        if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT
    ]
    weight_avals = [jax.ShapeDtypeStruct(tuple(w.shape), jax_dtype(w.dtype)) for w in weights]
    user_avals = tuple(jax.ShapeDtypeStruct(tuple(v.shape), jax_dtype(v.dtype)) for _, v in user)
    user_outputs = [spec.arg.name for spec in signature.output_specs if spec.kind == OutputKind.USER_OUTPUT]

    export_dir = Path(program["out_dir"]) / f".export-{program['name']}"
    shutil.rmtree(export_dir, ignore_errors=True)
    export_dir.mkdir(parents=True)
    # The inputs the program updates in place (the KV caches) are donated: the plugin writes them in place
    mutated = {spec.target for spec in signature.output_specs if spec.kind == OutputKind.USER_INPUT_MUTATION}
    donated = tuple(1 + i for i, (name, _) in enumerate(user) if name in mutated)

    marked = with_marked_weights(fn, weight_names)

    def step(weights, *inputs):
        return marked(weights, inputs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = jax.jit(step, device=device, donate_argnums=donated).lower(weight_avals, *user_avals)
        lowered.compile(compiler_options={**compiler_options, "export_path": str(export_dir)})
    files = {"jax_program": _export_for_cpu(fn, weights, weight_names, weight_avals, user_avals, program)}
    out_avals = jax.tree_util.tree_leaves(lowered.out_info)
    output_names = _output_names(out_avals, user_outputs, [(n, a) for (n, _), a in zip(user, user_avals)])

    ttnn = _newest(export_dir, "*.ttnn")
    irs = export_dir / "irs"
    dumps = {
        "ttnn": ttnn,
        "ttir_mlir": _newest(irs, "ttir_*.mlir"),
        "ttnn_mlir": _newest(irs, "ttnn_runtime_*.mlir") or _newest(irs, "ttnn_[0-9]*.mlir"),
    }
    if dumps["ttnn"] is None:
        raise RuntimeError(f"the plugin compiled {program['name']} but wrote no .ttnn file into {export_dir}")
    for kind, path in dumps.items():
        if path is not None:
            target = Path(program["out_dir"]) / f"{program['name']}{OUTPUT_FILES[kind]}"
            shutil.move(str(path), target)
            files[kind] = target.name
    ttnn_mlir = (Path(program["out_dir"]) / files["ttnn_mlir"]).read_text() if "ttnn_mlir" in files else ""
    shutil.rmtree(export_dir, ignore_errors=True)
    return {
        "status": "lowered",
        "files": files,
        "ttnn_ops": op_histogram(ttnn_mlir),
        "parameter_formats": parameter_formats(ttnn_mlir),
        "weights": _tensor_specs(weight_names, weights, jax_dtype),
        "inputs": [{"name": n, "dtype": str(a.dtype), "shape": list(a.shape)} for (n, _), a in zip(user, user_avals)],
        "outputs": [
            {"name": name, "dtype": str(a.dtype), "shape": list(a.shape)} for name, a in zip(output_names, out_avals)
        ],
        "seconds": round(time.perf_counter() - start, 3),
    }


def _claim(path: Path) -> bool:
    """Take a program for this worker: True if no worker (this one included) has taken it before."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _wait_until_saved(program: dict, cancelled: Path) -> bool:
    """Wait for the parent to finish saving ``program`` (it may still be capturing it); False if it gave up."""
    saved = Path(program["saved"])
    while not saved.exists():
        if cancelled.exists():
            return False
        time.sleep(SAVED_POLL_SECONDS)
    return True


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    results = Path(job["results"])

    def emit(record: dict) -> None:
        with results.open("a") as f:
            f.write(json.dumps(record) + "\n")

    import jax

    from ingot.compile.tt.ops import unlowered_ops
    from ingot.compile.tt.paged_cache_jax import register_torchax_lowerings
    from ingot.compile.tt.torchax_compat import import_torchax

    import_torchax().default_env()  # the environment registers torchax's aten -> JAX lowerings
    register_torchax_lowerings()  # TT's paged KV-cache writes (torch.ops.ingot.tt_paged_*)
    device = jax.devices("tt")[0]
    for program in job["programs"]:
        if not _claim(Path(job["claims"]) / program["name"]):
            continue  # another worker has it
        if not _wait_until_saved(program, Path(job["cancelled"])):
            return 0  # the compile stopped before it captured this program
        emit({"name": program["name"], "status": "start"})
        try:
            record = lower_one(program, job["compiler_options"], device)
        except Exception as error:  # one program's failure is its result; the next program still lowers
            text = f"{type(error).__name__}: {error}"
            record = {
                "status": "failed",
                "error": text.strip()[-4000:],
                "unlowered_ops": unlowered_ops(text),
                "traceback": traceback.format_exc()[-4000:],
            }
        emit({"name": program["name"], **record})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
