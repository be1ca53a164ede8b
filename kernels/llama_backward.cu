// Backward of the Llama-family layers, mirroring src/cpu/ops/{rmsnorm,rope,swiglu}.rs: each kernel
// adds into its gradients as the CPU function does; the norm's weight gradient is a column sum
// reduced in a fixed order (no float atomics).
#include "common.cuh"

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

// dw (C) += sum_rows dout inp rstd; blocks of (32, COLUMN_ROWS) threads
extern "C" __global__ void __launch_bounds__(512) rmsnorm_backward_dweight(
    float* dw, const float* dout, const float* inp, const float* rstd, int N, int C) {
    column_sums<1>(
        N, C,
        [&](int r, int c, float* s) { s[0] += dout[(long)r * C + c] * inp[(long)r * C + c] * rstd[r]; },
        [&](int c, const float* s) { dw[c] += s[0]; });
}

// dinp (N, H, HS) += dout rotated back by pos[n] (the transpose of rope_forward's turn), with the
// tables cos, sin (max_pos, HS/2)
extern "C" __global__ void rope_backward(float* dinp, const float* dout, const int* pos,
                                         const float* cos_t, const float* sin_t, int N, int H,
                                         int HS) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    int half = HS / 2;
    if (i >= (long)N * H * half) return;
    int d = i % half;
    long nh = i / half;  // row n * H + head h
    long n = nh / H;
    float c = cos_t[(long)pos[n] * half + d], s = sin_t[(long)pos[n] * half + d];
    long o = nh * HS + d;
    float g1 = dout[o], g2 = dout[o + half];
    dinp[o] += g1 * c + g2 * s;
    dinp[o + half] += g2 * c - g1 * s;
}

// dgate (n) += dout up silu'(gate); dup (n) += dout silu(gate)
extern "C" __global__ void swiglu_backward(float* dgate, float* dup, const float* dout,
                                           const float* gate, const float* up, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i];
    float s = 1.0f / (1.0f + expf(-g));
    // d/dg (g s(g)) = s + g s (1 - s)
    dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    dup[i] += dout[i] * g * s;
}
