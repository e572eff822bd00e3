"""`ingot serve --replicas`: options Ray Serve cannot take are refused in one line, before Ray starts."""

from __future__ import annotations

from tests.conftest import run_cli
from tests.server.test_serve_cli import assert_one_line_error, free_port


def test_replicas_serve_one_model(tmp_path):
    result = run_cli("serve", "a", "b", "--replicas", "2", "--port", str(free_port()), cache_dir=tmp_path)
    assert_one_line_error(result, "one model")


def test_replica_bounds_are_checked_before_ray_starts(tmp_path):
    port = str(free_port())
    result = run_cli("serve", "--min-replicas", "3", "--max-replicas", "2", "--port", port, cache_dir=tmp_path)
    assert_one_line_error(result, "min_replicas..max_replicas")
    result = run_cli("serve", "--replicas", "0", "--port", port, cache_dir=tmp_path)
    assert result.returncode == 2 and "--replicas" in result.stderr  # a usage error, as argparse reports them


def test_scaling_delays_need_autoscaling(tmp_path):
    port = str(free_port())
    result = run_cli("serve", "--replicas", "2", "--upscale-delay-s", "5", "--port", port, cache_dir=tmp_path)
    assert_one_line_error(result, "autoscaling")


def test_a_registry_ref_that_cannot_be_pulled_is_refused_before_ray_starts(tmp_path):
    """The REF is checked where the command runs, first (the replicas would each fail on it, again and again)."""
    unreachable = f"127.0.0.1:{free_port()}"  # nothing listens there
    ref = f"oci://{unreachable}/ingot/tiny:key"
    result = run_cli("serve", ref, "--replicas", "2", "--port", str(free_port()), cache_dir=tmp_path)
    assert_one_line_error(result, unreachable, "unreachable")  # and nothing of Ray's start on stderr
