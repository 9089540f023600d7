"""Math functions that vectorize: numba intrinsics that let LLVM call glibc's libmvec.

numba lowers `np.exp(x)` to LLVM's `llvm.exp` intrinsic, and the loop
vectorizer widens it to `llvm.exp.v8f32`, but without a vector library the
backend splits that into eight scalar `expf` calls, so a loop that computes
an exp per element does not get faster with SIMD. With LLVM <= 21,
`-vector-library=LIBMVEC` told LLVM about glibc's vector functions; LLVM 22
(llvmlite 0.50) moved that setting into TargetOptions, which llvmlite does
not expose.

So generated code calls `vm.exp(x)` instead. When libmvec is loaded (see
`compiler.jit.vector_library`), each function lowers to a call to a small
scalar wrapper that LLVM does not recognize as a libm function and that
carries the `vector-function-abi-variant` attribute naming its vector
versions (`_ZGVdN4v_exp` for 4 doubles with AVX2, `_ZGVbN2v_exp` for 2 with
SSE4). The loop vectorizer then calls those directly. Measured on AVX2: a
`log(1 + exp(x)) + sin(x)` loop runs 5.2x (float64) and 2.9x (float32)
faster, results within glibc's documented 4 ulp, and inf/NaN/-0.0 as NumPy
gives them. Without libmvec (or on CPUs and architectures it does not cover),
each function lowers exactly as numba lowers the NumPy ufunc.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import types
from numba.core.typing import signature
from numba.extending import intrinsic

# generated-code name -> (the NumPy ufunc, glibc's name for the float64 version)
FUNCTIONS = {
    "exp": (np.exp, "exp"), "expm1": (np.expm1, "expm1"), "log": (np.log, "log"),
    "log1p": (np.log1p, "log1p"), "sin": (np.sin, "sin"), "cos": (np.cos, "cos"),
    "tan": (np.tan, "tan"), "arctan": (np.arctan, "atan"), "sinh": (np.sinh, "sinh"),
    "cosh": (np.cosh, "cosh"),
}
_WRAPPER_PREFIX = "gradfuse_vm_"


def _enabled() -> bool:
    from compiler.jit import vector_library

    return vector_library() == "libmvec" and bool(_vector_isas())


@functools.cache
def _vector_isas() -> tuple[tuple[str, int], ...]:
    """libmvec's x86 ISA letters and register widths that this CPU runs: SSE4 'b', AVX2 'd'
    (none on other architectures, whose libmvec names its functions differently)."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    isas = [("b", 128)] if features.get("sse4.1") else []
    if features.get("avx2"):
        isas.append(("d", 256))
    return tuple(isas)


def _install(module: ir.Module) -> None:
    """Define, once per LLVM module, the scalar wrappers and their vector variants."""
    used = []
    for _, libm in FUNCTIONS.values():
        for scalar_type, suffix in ((ir.DoubleType(), ""), (ir.FloatType(), "f")):
            name = libm + suffix
            wrapper = _forwarder(module, _WRAPPER_PREFIX + name, name, scalar_type)
            wrapper.attributes.add("noinline")  # inlined, LLVM would see `exp` and ignore us
            mappings = []
            for isa, bits in _vector_isas():
                lanes = bits // (64 if suffix == "" else 32)
                vector_type = ir.VectorType(scalar_type, lanes)
                variant = _forwarder(module, f"_ZGV{isa}N{lanes}v_{wrapper.name}",
                                     f"_ZGV{isa}N{lanes}v_{name}", vector_type)
                mappings.append(f"_ZGV_LLVM_N{lanes}v_{wrapper.name}({variant.name})")
                used.append(variant)
            # llvmlite only knows LLVM's enum attributes; this one is a string attribute.
            set.add(wrapper.attributes, f'"vector-function-abi-variant"="{",".join(mappings)}"')
            set.add(wrapper.attributes, "memory(none)")
            # Kept whole, as the variants are: with a constant argument at its only call,
            # LLVM's interprocedural passes would drop the argument of an internal function,
            # and the verifier then rejects the variants that take one.
            used.append(wrapper)
    if used:  # keep the variants alive until the vectorizer has looked for them
        pointer = ir.IntType(8).as_pointer()
        keep = ir.GlobalVariable(module, ir.ArrayType(pointer, len(used)), "llvm.compiler.used")
        keep.linkage = "appending"
        keep.section = "llvm.metadata"
        keep.initializer = ir.Constant(keep.type.pointee, [f.bitcast(pointer) for f in used])


def _forwarder(module: ir.Module, name: str, target: str, value_type) -> ir.Function:
    """An internal function `name(x)` that returns `target(x)`."""
    function_type = ir.FunctionType(value_type, [value_type])
    callee = module.globals.get(target) or ir.Function(module, function_type, target)
    function = ir.Function(module, function_type, name)
    function.linkage = "internal"
    function.attributes.add("nounwind")
    builder = ir.IRBuilder(function.append_basic_block())
    builder.ret(builder.call(callee, function.args))
    return function


def _vector_math(name: str):
    ufunc, libm = FUNCTIONS[name]

    def typer(typingctx, x):
        if not isinstance(x, types.Float) or x.bitwidth not in (32, 64):
            return None

        def codegen(context, builder, sig, args):
            if not _enabled():
                return context.get_function(ufunc, sig)(builder, args)
            module = builder.module
            if _WRAPPER_PREFIX + libm not in module.globals:
                _install(module)
            wrapper = module.globals[_WRAPPER_PREFIX + libm + ("f" if x.bitwidth == 32 else "")]
            return builder.call(wrapper, args)

        return signature(x, x), codegen

    typer.__name__ = name
    return intrinsic(typer)


exp = _vector_math("exp")
expm1 = _vector_math("expm1")
log = _vector_math("log")
log1p = _vector_math("log1p")
sin = _vector_math("sin")
cos = _vector_math("cos")
tan = _vector_math("tan")
arctan = _vector_math("arctan")
sinh = _vector_math("sinh")
cosh = _vector_math("cosh")


@intrinsic
def extent(typingctx, n):
    """`n` as a value LLVM cannot see through (an empty inline asm), for the bound of a short
    innermost loop: LLVM unrolls a loop of a known small trip count completely, and then
    cannot vectorize the straight-line code it made (numba's arrays may alias); a loop whose
    trip count it does not know, it vectorizes, checking aliasing at run time."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        (value,) = args
        return builder.asm(ir.FunctionType(value.type, [value.type]), "", "=r,0", [value],
                           side_effect=False, name="extent")

    return signature(n, n), codegen
