"""The compiled part of the package (all metadata is in pyproject.toml): the MDF echo
canceller's element-wise kernel, ``gateway/audio/_mdf.c`` (plain C99; loaded with ctypes by
``gateway/audio/mdf_native.py``, which falls back to numpy when it is missing)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "gateway.audio._mdf", ["gateway/audio/_mdf.c"],
    # -O3 without -ffast-math: the kernel's NaN checks need IEEE semantics; no -march=native
    # (the wheel or build may run on another machine)
    extra_compile_args=["-O3", "-std=c99", "-fno-math-errno"],
)])
