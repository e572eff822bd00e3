"""The conversion check's child process: ``python -m ingot.compile.verify.tt_conversion_worker JOB.json``.

It runs with JAX's CPU backend only (``JAX_PLATFORMS=cpu``). For each program of the job: load its torch program
and its exported JAX function from the artifact, give both the artifact's weights and the same inputs
(tt_conversion_inputs.py), and compare what they return; one JSON line per program goes to the job's results file.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

from ingot.artifacts.manifest import Manifest, ProgramSpec
from ingot.compile.tt import paged_cache  # noqa: F401  (a TT program's .pt2 calls torch.ops.ingot.tt_paged_*)
from ingot.compile.verify.tt_conversion_inputs import paged_cache_inputs, program_inputs
from ingot.compile.verify.metrics import pcc
from ingot.compile.weightless import load_with_weights

UPDATED = " (updated)"  # how a program's outputs name an input it updates in place (tt/worker.py)


def artifact_weights(directory: Path, manifest: Manifest) -> dict[str, torch.Tensor]:
    """The artifact's weights by every name a program reads them by, tied names included."""
    from safetensors.torch import load_file

    weights = load_file(directory / manifest.weights.file)
    for alias, owner in manifest.weights.aliases.items():
        weights[alias] = weights[owner]
    return weights


def run_jax(program: ProgramSpec, directory: Path, weights: dict[str, torch.Tensor], inputs: list[np.ndarray]):
    """The program's JAX function on the CPU backend: its outputs as NumPy arrays, updated inputs first."""
    import jax

    exported = jax.export.deserialize(bytearray((directory / program.tt.jax_program).read_bytes()))
    named = [weights[name].numpy() for name in program.tt.weight_inputs]
    # JAX without x64 takes 32-bit integers, as the TT program does
    arguments = tuple(a.astype(np.int32) if a.dtype == np.int64 else a for a in inputs)
    # The inputs are donated, as the TT program donates its caches: JAX's copies of the NumPy inputs become the
    # updated caches in place instead of a second full-size cache (~3 GB for SmolLM2 on p150)
    return [np.asarray(out) for out in jax.jit(exported.call, donate_argnums=1)(named, arguments)]


def run_torch(program: ProgramSpec, directory: Path, weights: dict[str, torch.Tensor], inputs: list[np.ndarray]):
    """The torch program it was converted from, on the same inputs (updated in place); its outputs."""
    exported = load_with_weights(directory / program.tt.torch_program, weights)
    # the program's own argument structure (a TT step takes its per-layer caches as one list)
    args, kwargs = torch.utils._pytree.tree_unflatten([torch.from_numpy(a) for a in inputs], exported.call_spec.in_spec)
    with torch.no_grad():
        outputs = exported.module()(*args, **kwargs)
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


# What a comparison records when an output is NaN or infinite where the other is not (JSON has no NaN): no
# correlation, and an error larger than any float32 difference.
NO_CORRELATION, UNBOUNDED_ERROR = -1.0, 1e39


def measured(pcc_value: float, max_abs_error: float, identical: bool) -> dict[str, float]:
    """PCC and max abs error as the manifest stores them (finite numbers); identical outputs agree perfectly, also
    where PCC is undefined (a constant output)."""
    if identical:
        return {"pcc": 1.0, "max_abs_error": 0.0}
    return {
        "pcc": pcc_value if np.isfinite(pcc_value) else NO_CORRELATION,
        "max_abs_error": max_abs_error if np.isfinite(max_abs_error) else UNBOUNDED_ERROR,
    }


def agreement(actual: np.ndarray | torch.Tensor, expected: np.ndarray | torch.Tensor) -> dict[str, float]:
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    identical = bool(torch.equal(actual, expected))
    return measured(pcc(actual, expected), float((actual - expected).abs().max()), identical)


def cache_agreement(actual: np.ndarray, expected: np.ndarray, slot_mapping: np.ndarray) -> dict[str, float]:
    """A KV cache [layers, 2, blocks, block_size, ...] after the step: PCC over the slots the step's sequences wrote,
    max abs over every block but the padding block (which padded tokens all write to, in no set order)."""
    block_size = actual.shape[3]
    written = slot_mapping[slot_mapping >= block_size]  # slots of the padding block (block 0) are below block_size
    blocks, offsets = written // block_size, written % block_size
    worst = max(float(np.abs(a[:, 1:] - e[:, 1:]).max()) for a, e in zip(actual, expected))  # a layer at a time
    slots = torch.from_numpy(actual[:, :, blocks, offsets]), torch.from_numpy(expected[:, :, blocks, offsets])
    return measured(pcc(*slots), worst, identical=worst == 0.0)


def paged_cache_agreement(
    actual: list[np.ndarray], expected: list[np.ndarray], slot_mapping: np.ndarray
) -> dict[str, float]:
    """Per-layer paged caches [blocks, kv_heads, block_size, head_dim] after the step, as one ``kv_cache``: PCC over
    the slots the step's sequences wrote, max abs over every block but the padding block."""
    block_size = actual[0].shape[2]
    written = slot_mapping[slot_mapping >= block_size]
    blocks, offsets = written // block_size, written % block_size
    worst = max(float(np.abs(a[1:] - e[1:]).max()) for a, e in zip(actual, expected))
    slots = [torch.from_numpy(np.stack([c[blocks, :, offsets] for c in caches])) for caches in (actual, expected)]
    return measured(pcc(*slots), worst, identical=worst == 0.0)


def check_program(program: ProgramSpec, directory: Path, manifest: Manifest, weights: dict) -> dict[str, dict]:
    """Output name -> agreement of the JAX function's output with the torch program's."""
    inputs = program_inputs(program, manifest)
    jax_outputs = run_jax(program, directory, weights, inputs)
    torch_outputs = run_torch(program, directory, weights, inputs)  # updates the inputs in place: after JAX ran
    names = [spec.name for spec in program.tt.inputs]
    updated = [spec.name.removesuffix(UPDATED) for spec in program.tt.outputs if spec.name.endswith(UPDATED)]
    found: dict[str, dict] = {}
    slot_mapping = inputs[names.index("slot_mapping")] if "slot_mapping" in names else None
    paged = paged_cache_inputs(updated)
    if paged:  # the per-layer caches agree as one kv_cache, as the all-layer cache does
        outputs = [out for name, out in zip(updated, jax_outputs) if name in paged]
        found["kv_cache"] = paged_cache_agreement(outputs, [inputs[names.index(n)] for n in paged], slot_mapping)
    for name, out in zip(updated, jax_outputs):
        value = inputs[names.index(name)]
        if name == "kv_cache":
            found[name] = cache_agreement(out, value, slot_mapping)
        elif name not in paged:
            found[name] = agreement(out, value)
    for spec, jax_out, torch_out in zip(program.outputs, jax_outputs[len(updated) :], torch_outputs):
        found[spec.name] = agreement(jax_out, torch_out)
    return found


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    directory = Path(job["artifact"])
    manifest = Manifest.model_validate(job["manifest"])
    weights = artifact_weights(directory, manifest)
    with open(job["results"], "a") as results:
        for name in job["programs"]:
            try:
                record = {"name": name, "outputs": check_program(manifest.program(name), directory, manifest, weights)}
            except Exception as error:  # one program's failure is its result; the next program is still checked
                record = {"name": name, "error": f"{type(error).__name__}: {error}"[-2000:],
                          "traceback": traceback.format_exc()[-4000:]}  # fmt: skip
            results.write(json.dumps(record) + "\n")
            results.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
