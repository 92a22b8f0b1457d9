"""The one compiled part of bertui: an optional C kernel for torch's CPU dropout masks
(``bertui/core/_mt19937.c``). The project's metadata is in pyproject.toml. Where no C
compiler is found the build skips it and bertui draws its masks with torch (same numbers,
slower)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bertui.core._mt19937",
            sources=["bertui/core/_mt19937.c"],
            extra_compile_args=["-O3", "-std=c99"],
            optional=True,
        )
    ]
)
