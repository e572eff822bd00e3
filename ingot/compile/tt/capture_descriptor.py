"""Regenerate the shipped p150 system descriptor: ``python -m ingot.compile.tt.capture_descriptor [OUT]``.

Compile-only mode needs a system descriptor (``.ttsys``) that matches the mock device the plugin itself
opens at optimization levels 1-2 (a mismatch aborts with "OpModel device worker grid does not match").
The plugin's own mock Blackhole p150 is described by the cluster descriptor ``blackhole_P150.yaml`` in
its unpacked runtime assets; opening a device on that mock cluster makes the plugin write the system
descriptor it derived to ``$TMPDIR/tt_pjrt_system_descriptor`` (deleted when the process exits), which
is copied from there. Run it again after changing the plugin version, and commit the result.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ingot.compile.tt.plugin import DESCRIPTORS, find_plugin
from ingot.digest import sha256_file

CLUSTER_YAML = "tt_metal/third_party/umd/tests/cluster_descriptor_examples/blackhole_P150.yaml"
_COPY = (
    "import jax, os, shutil, sys; jax.devices('tt'); "
    "shutil.copy(os.path.join(os.environ['TMPDIR'], 'tt_pjrt_system_descriptor'), sys.argv[1])"
)


def capture(out: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="ingot-ttsys-") as tmp:
        env = {**os.environ, "TMPDIR": tmp, "JAX_PLATFORMS": "cpu,tt", "TT_METAL_CACHE": str(Path(tmp) / "cache")}
        env.pop("TT_COMPILE_ONLY_SYSTEM_DESC", None)
        # First start: the plugin unpacks its runtime assets, then fails to find a device. That is expected.
        subprocess.run([sys.executable, "-c", "import jax; jax.devices('tt')"], env=env, capture_output=True, cwd=tmp)
        cluster = next(Path(tmp).glob(f"libtt-*/{CLUSTER_YAML}"), None)
        if cluster is None:
            raise SystemExit(f"the plugin's runtime assets hold no {CLUSTER_YAML}")
        env["TT_METAL_MOCK_CLUSTER_DESC_PATH"] = str(cluster)
        done = subprocess.run(  # cwd: the mock device writes generated/fabric/*.yaml into it
            [sys.executable, "-c", _COPY, str(out.resolve())], env=env, capture_output=True, text=True, cwd=tmp
        )
        if done.returncode != 0:
            raise SystemExit(f"capturing the descriptor failed: {done.stderr[-2000:]}")
    return sha256_file(out)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DESCRIPTORS["p150"]
    plugin = find_plugin()
    digest = capture(target)
    print(f"{target}: sha256 {digest} ({plugin.distribution} {plugin.version})")
