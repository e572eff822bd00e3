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
