"""The compiled parts (the worker's kernel, the Redis command packer);
everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streamer.core._fastpath",
            [
                f"streamer/core/_fastpath_c/{name}.c"
                for name in ("module", "parse", "encode")
            ],
            depends=["streamer/core/_fastpath_c/fastpath.h"],
            # no fused multiply-add: the double-double sums need every rounding
            extra_compile_args=["-O2", "-ffp-contract=off"],
            optional=True,
        ),
        # a batch's EVALSHA packed in C (streamer.adapters.store)
        Extension(
            "streamer.adapters._resp",
            ["streamer/adapters/_resp.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
