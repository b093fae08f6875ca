"""The source distribution carries everything the tests and tools need (CPU only, no build of the extension)."""

import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class TestSdist(unittest.TestCase):
    def test_sdist_is_complete(self):
        with tempfile.TemporaryDirectory() as out:
            done = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", out], cwd=REPO,
                                  capture_output=True, text=True)
            self.assertEqual(done.returncode, 0, done.stderr[-2000:])
            (archive,) = Path(out).glob("*.tar.gz")
            with tarfile.open(archive) as tar:
                names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
        if not tracked:
            self.skipTest("not a git checkout")
        wanted = [f for f in tracked if f.startswith(("deepgemm_ops/", "csrc/", "test/", "tools/", "docs/"))
                  or f in ("LICENSE", "README.md", "setup.py", "CMakeLists.txt", ".gitmodules")]
        self.assertEqual(sorted(f for f in wanted if f not in names), [])


if __name__ == "__main__":
    unittest.main()
