"""The compiled part of the package (all metadata is in pyproject.toml): the MDF echo
canceller's kernel, ``gateway/audio/_mdf.c`` and its FFT ``_mdf_fft.h`` (C99 with GCC's vector
extensions; loaded with ctypes by ``gateway/audio/mdf_native.py``; without it the numpy kernel
runs)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "gateway.audio._mdf", ["gateway/audio/_mdf.c"], depends=["gateway/audio/_mdf_fft.h"],
    # -O3 without -ffast-math: the kernel's NaN checks need IEEE semantics; no -march=native
    # (the wheel or build may run on another machine); the FFT reads its vector lanes as floats
    extra_compile_args=["-O3", "-std=gnu99", "-fno-math-errno", "-fno-strict-aliasing"],
)])
