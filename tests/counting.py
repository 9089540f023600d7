"""A compiled function that counts the calls that take its general path, for fast-path tests."""

from __future__ import annotations

from compiler import compile_grad


class CountingGeneral:
    """A compiled function whose general path counts its calls (fast calls do not bind)."""

    def __init__(self, fn, **options):
        self.f = compile_grad(fn, **options)
        self.general = 0
        arguments = self.f._arguments

        def counted(args, kwargs):
            self.general += 1
            return arguments(args, kwargs)

        self.f._arguments = counted
