"""deepgemm_ops: pure-Python at install time; the host module and the kernels are compiled on first GPU use.

The kernel and host sources in csrc/ ship inside the package as deepgemm_ops/csrc so a wheel JIT-compiles them too.
"""

from setuptools import setup

setup(
    name="deepgemm_ops",
    version="0.1.0",
    description="DeepGEMM-style FP8 GEMMs with fine-grained scaling as torch.ops.deepgemm operators",
    license="MIT",
    python_requires=">=3.10",
    packages=["deepgemm_ops", "deepgemm_ops.bench", "deepgemm_ops.compat", "deepgemm_ops.csrc"],
    package_dir={"deepgemm_ops.csrc": "csrc"},
    package_data={"deepgemm_ops.csrc": ["host/*.hpp", "host/*.cpp", "host/*.h", "kernels/*.cuh", "kernels/*.h"]},
    # numpy: torch warns on every import without it (its tensor <-> ndarray bridge); nothing here uses it directly.
    install_requires=["torch>=2.11", "ninja", "numpy"],
    extras_require={
        # libcu++ headers for NVRTC where no CUDA toolkit is installed; match torch's CUDA version (13.0 for the
        # cu130 builds the tests run with).
        "nvrtc": ["nvidia-cuda-cccl"],
        "test": ["pytest", "expecttest", "nvidia-cuda-cuobjdump", "nvidia-cuda-nvdisasm", "nvidia-cuda-cccl==13.0.*"],
        "plot": ["matplotlib"],
        "lint": ["ruff"],
    },
)
