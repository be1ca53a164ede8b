// Shared device helpers. The registry pastes this file in place of `#include "common.cuh"`,
// since NVRTC is given each kernel file alone.
#pragma once

#define WARP 32

// NVRTC has no <math.h>; this is the float +inf bit pattern.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32). Every thread gets the result.
__device__ float block_sum(float v) {
    __shared__ float part[WARP];
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
    v = warp_sum(v);
    if (lane == 0) part[w] = v;
    __syncthreads();
    v = (threadIdx.x < nw) ? part[threadIdx.x] : 0.0f;
    if (w == 0) v = warp_sum(v);
    if (threadIdx.x == 0) part[0] = v;
    __syncthreads();
    float r = part[0];
    __syncthreads();  // part[] is reused by the next call
    return r;
}

// Maximum over the whole block (blockDim.x a multiple of 32). Every thread gets the result.
__device__ float block_max(float v) {
    __shared__ float part[WARP];
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
    v = warp_max(v);
    if (lane == 0) part[w] = v;
    __syncthreads();
    v = (threadIdx.x < nw) ? part[threadIdx.x] : -INFINITY;
    if (w == 0) v = warp_max(v);
    if (threadIdx.x == 0) part[0] = v;
    __syncthreads();
    float r = part[0];
    __syncthreads();
    return r;
}

// Sum over the whole block in f64 (blockDim.x a multiple of 32), for reductions the CPU reference
// adds in f64. Every thread gets the result.
__device__ double block_sum_f64(double v) {
    __shared__ double part_f64[WARP];
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) part_f64[w] = v;
    __syncthreads();
    v = (threadIdx.x < nw) ? part_f64[threadIdx.x] : 0.0;
    if (w == 0)
        for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) part_f64[0] = v;
    __syncthreads();
    double r = part_f64[0];
    __syncthreads();
    return r;
}

// Whether this block is the last of the S blocks that split one piece of work to be done with
// its part (then it adds up all the parts, in order). Every thread fences its writes of its part
// (device-wide visible) before the block counts itself in `counter`; the last block sets the
// counter back to zero for the next launch and fences before it reads the others' parts. Every
// thread of the block must call it.
__device__ __forceinline__ bool last_split_block(unsigned* counter, int S) {
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        last = atomicAdd(counter, 1u) == (unsigned)(S - 1);
        if (last) atomicExch(counter, 0u);
    }
    __syncthreads();
    if (last) __threadfence();
    return last;
}

// Rows of a column reduction that one block's threads share: blockDim (32, COLUMN_ROWS).
#define COLUMN_ROWS 16

// Column sums of a parameter gradient without atomics, in a fixed order. Block (bx, z) owns 32
// columns and the z-th of gridDim.y equal stretches of the rows: thread (x, y) adds
// `term(r, c, s)` for the stretch's rows r = y, y + COLUMN_ROWS, ... into its NV sums s, and
// thread (x, 0) adds the COLUMN_ROWS partial sums in order. With one stretch it hands them to
// `done(c, sums)`; with S stretches it writes them to `partial` (S, NV, C), and the last of the
// column's S blocks to finish (`counters`: one per 32 columns, zero between launches) adds the
// stretches in order and hands that to `done`. Neighbouring threads read neighbouring columns of
// a row. Launch (ceil(C / 32), S) blocks of (32, COLUMN_ROWS) threads.
template <int NV, class Term, class Done>
__device__ void column_sums(int N, int C, float* partial, unsigned* counters, Term term, Done done) {
    __shared__ float part[NV][COLUMN_ROWS][WARP + 1];
    const int x = threadIdx.x, y = threadIdx.y, S = gridDim.y, z = blockIdx.y;
    const int c = blockIdx.x * WARP + x;
    const int stretch = (N + S - 1) / S, r1 = min(N, (z + 1) * stretch);
    float s[NV];
    for (int i = 0; i < NV; i++) s[i] = 0.0f;
    if (c < C)
        for (int r = z * stretch + y; r < r1; r += COLUMN_ROWS) term(r, c, s);
    for (int i = 0; i < NV; i++) part[i][y][x] = s[i];
    __syncthreads();
    const bool summer = y == 0 && c < C;
    if (summer)
        for (int i = 0; i < NV; i++) {
            s[i] = 0.0f;
            for (int j = 0; j < COLUMN_ROWS; j++) s[i] += part[i][j][x];
        }
    if (S == 1) {
        if (summer) done(c, s);
        return;
    }
    if (summer)
        for (int i = 0; i < NV; i++) partial[((long)z * NV + i) * C + c] = s[i];
    if (!last_split_block(counters + blockIdx.x, S) || !summer) return;
    for (int i = 0; i < NV; i++) {
        s[i] = 0.0f;
        for (int k = 0; k < S; k++) s[i] += __ldcg(partial + ((long)k * NV + i) * C + c);
    }
    done(c, s);
}
