// Root-mean-square normalisation (Llama), mirroring src/cpu/ops/rmsnorm.rs. The weight gradient
// is a column sum reduced in a fixed order (no float atomics).
#include "common.cuh"

// out (N, C) = inp / sqrt(mean(inp^2) + eps) * w; one block per row; rrms (N) saved when non-null
extern "C" __global__ void rmsnorm_forward(float* out, float* rrms, const float* inp, const float* w,
                                           int N, int C, float eps) {
    int n = blockIdx.x;
    if (n >= N) return;
    const float* x = inp + (long)n * C;
    float s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += x[c] * x[c];
    float r = rsqrtf(block_sum(s) / C + eps);
    float* o = out + (long)n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = x[c] * r * w[c];
    if (rrms && threadIdx.x == 0) rrms[n] = r;
}

// dinp (N, C) += dout w rstd - inp rstd^3 mean(dout w inp): rstd depends on every input of the
// row through mean(inp^2); one block per row
extern "C" __global__ void rmsnorm_backward_dinp(float* dinp, const float* dout, const float* inp,
                                                 const float* w, const float* rstd, int N, int C) {
    int n = blockIdx.x;
    if (n >= N) return;
    const float* x = inp + (long)n * C;
    const float* d = dout + (long)n * C;
    float s = rstd[n];
    float gx = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) gx += d[c] * w[c] * x[c];
    float k = s * s * s * block_sum(gx) / C;
    float* di = dinp + (long)n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) di[c] += d[c] * w[c] * s - x[c] * k;
}

// dw (C) += sum_rows dout inp rstd; blocks of (32, COLUMN_ROWS) threads (partial and counters
// as column_sums takes them)
extern "C" __global__ void __launch_bounds__(512) rmsnorm_backward_dweight(
    float* dw, const float* dout, const float* inp, const float* rstd, int N, int C, float* partial,
    unsigned* counters) {
    column_sums<1>(
        N, C, partial, counters,
        [&](int r, int c, float* s) { s[0] += dout[(long)r * C + c] * inp[(long)r * C + c] * rstd[r]; },
        [&](int c, const float* s) { dw[c] += s[0]; });
}
