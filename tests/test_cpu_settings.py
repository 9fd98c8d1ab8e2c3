"""Process-wide CPU settings gmn_inr makes for the user (gmn_inr/__init__.py, gmn_inr.cpu)."""
import os
import subprocess
import sys


def _policy(env_value=None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    code = "import os, gmn_inr, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_gmn_inr_makes_openmp_wait_passively_unless_the_user_chose():
    # spinning OpenMP threads made a 2-thread training step 13x slower beside another busy process
    assert _policy() == "PASSIVE"
    assert _policy("ACTIVE") == "ACTIVE"
