// Layer normalisation, mirroring src/cpu/ops/layernorm.rs. The parameter gradients are column
// sums over rows, reduced in a fixed order (no float atomics).
#include "common.cuh"

// out (N, C) = (inp - mean) * rstd * w + b; one block per row; mean/rstd (N) saved when non-null
extern "C" __global__ void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                             const float* w, const float* b, int N, int C, float eps) {
    int n = blockIdx.x;
    if (n >= N) return;
    const float* x = inp + (long)n * C;
    float s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += x[c];
    float m = block_sum(s) / C;
    // Two passes over the row, as the CPU reference does, for the same rounding behaviour.
    float v = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) v += (x[c] - m) * (x[c] - m);
    float r = rsqrtf(block_sum(v) / C + eps);
    float* o = out + (long)n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = (x[c] - m) * r * w[c] + b[c];
    if (threadIdx.x == 0) {
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = r;
    }
}

// dinp (N, C) += (dnorm - mean(dnorm) - norm mean(dnorm norm)) rstd with dnorm = w dout and
// norm = (inp - mean) rstd; one block per row
extern "C" __global__ void layernorm_backward_dinp(float* dinp, const float* dout, const float* inp,
                                                   const float* w, const float* mean,
                                                   const float* rstd, int N, int C) {
    int n = blockIdx.x;
    if (n >= N) return;
    const float* x = inp + (long)n * C;
    const float* d = dout + (long)n * C;
    float m = mean[n], s = rstd[n];
    float dn = 0.0f, dnn = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float dnorm = w[c] * d[c];
        dn += dnorm;
        dnn += dnorm * (x[c] - m) * s;
    }
    float dnorm_mean = block_sum(dn) / C;
    float dnorm_norm_mean = block_sum(dnn) / C;
    float* di = dinp + (long)n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float norm = (x[c] - m) * s;
        di[c] += (w[c] * d[c] - dnorm_mean - norm * dnorm_norm_mean) * s;
    }
}

// dw (C) += sum_rows norm dout; db (C) += sum_rows dout; blocks of (32, COLUMN_ROWS) threads
// (partial and counters as column_sums takes them)
extern "C" __global__ void __launch_bounds__(512) layernorm_backward_params(
    float* dw, float* db, const float* dout, const float* inp, const float* mean,
    const float* rstd, int N, int C, float* partial, unsigned* counters) {
    column_sums<2>(
        N, C, partial, counters,
        [&](int r, int c, float* s) {
            float d = dout[(long)r * C + c];
            s[0] += (inp[(long)r * C + c] - mean[r]) * rstd[r] * d;
            s[1] += d;
        },
        [&](int c, const float* s) {
            dw[c] += s[0];
            db[c] += s[1];
        });
}
