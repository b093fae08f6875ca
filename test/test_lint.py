"""The tree passes the linter configured in pyproject.toml (ruff: pyflakes, pycodestyle, import order, bugbear,
pyupgrade; 120 columns). Skips where ruff is not installed (``pip install -e ".[lint]"``)."""

import shutil
import subprocess
import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ruff():
    try:
        import ruff  # noqa: F401

        return [sys.executable, "-m", "ruff"]
    except ImportError:
        path = shutil.which("ruff")
        return [path] if path else None


RUFF = _ruff()


@unittest.skipIf(RUFF is None, "ruff is not installed")
class TestLint(unittest.TestCase):
    def test_ruff_check_is_clean(self):
        done = subprocess.run([*RUFF, "check", "--no-cache", str(ROOT)], cwd=ROOT, capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)


if __name__ == "__main__":
    unittest.main()
