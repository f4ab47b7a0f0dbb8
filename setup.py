"""Builds the C++ extensions (rANS coder, exact parameter-network kernels); everything else is declared in pyproject.toml."""
from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

setup(
    ext_modules=[
        Pybind11Extension(
            "codec.entropy._rans",
            ["codec/entropy/_rans.cpp"],
            cxx_std=17,
            depends=["codec/detmath.h"],
            # -ffp-contract=off and no -march=native: identical bytes on every x86-64/ARM machine.
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math"],
        ),
        Pybind11Extension(
            "codec.exact._kernels",
            ["codec/exact/_kernels.cpp"],
            cxx_std=17,
            depends=["codec/exact/simd.h", "codec/exact/erf_table.h", "codec/detmath.h"],
            # the same rule as the coder's: these kernels compute the coder's parameters
            extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math"],
        ),
    ],
)
