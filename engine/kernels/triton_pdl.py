"""The device side of programmatic dependent launch: see engine/kernels/pdl.py for the rules."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def wait_for_inputs(PDL: tl.constexpr):
    """Block until the kernel ahead has completed and its writes are visible."""
    if PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def allow_dependents(PDL: tl.constexpr):
    """Let the next kernel launch once every program of this one has started (or exited)."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def prefetch_rows_l2(first_row_ptr, row_stride_bytes, num_rows, num_bytes):
    """Threads 0..num_rows-1 each pull num_bytes of one row (16-byte aligned, a multiple of 16)
    into L2 with one bulk prefetch; nothing is loaded into registers."""
    if num_bytes > 0:
        tl.inline_asm_elementwise(
            """{
            .reg .pred p;
            .reg .u32 t;
            .reg .u64 a;
            mov.u32 t, %tid.x;
            setp.lt.u32 p, t, $3;
            mul.wide.u32 a, t, $2;
            add.u64 a, a, $1;
            @p cp.async.bulk.prefetch.L2.global [a], $4;
            mov.u32 $0, 0;
            }""",
            "=r,l,r,r,r",
            [first_row_ptr, row_stride_bytes, num_rows, num_bytes],
            dtype=tl.int32,
            is_pure=False,
            pack=1,
        )
