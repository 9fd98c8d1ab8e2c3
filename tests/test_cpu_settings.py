"""Process-wide CPU settings gmn_inr makes for the user (gmn_inr/__init__.py, gmn_inr.cpu)."""
import os
import subprocess
import sys

VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _after_import(**env_values) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in VARS}
    env.update(env_values)
    code = "import os, gmn_inr, torch; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return dict(zip(VARS, (None if v == "None" else v for v in out.split())))


def test_importing_gmn_inr_shortens_openmp_spinning_unless_the_user_chose():
    # spinning OpenMP threads made a 2-thread training step 13x slower beside another busy process
    assert _after_import() == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "1000"}
    assert _after_import(GOMP_SPINCOUNT="300000")["GOMP_SPINCOUNT"] == "300000"
    assert _after_import(OMP_WAIT_POLICY="ACTIVE") == {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None}
