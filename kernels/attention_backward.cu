// Backward of causal attention with left padding and grouped-query heads, mirroring
// src/cpu/ops/attention.rs's `attention_backward` through the saved probabilities att (B, NH, T, T).
// Two kernels, so that every gradient element is one warp's sum in a fixed order (no atomics):
// - per (query row, head): the scores' gradient dscores = p (dp - sum p dp) / sqrt(HS), with
//   dp = dout . v, saved (B, NH, T, T), and dq += dscores @ k;
// - per (key row, kv head): dk += dscores^T @ q and dv += att^T @ dout over the group's query
//   heads, in the CPU's order (heads, then queries).
// q, k, v and their gradients point at their first element (the host adds the layout offsets) with
// row strides in floats. Rows before start[b] get no gradient. Heads up to 128 wide.
#include "common.cuh"

// dq (B*T rows, NH*HS) += ..., dscores (B, NH, T, T) = ... at the visible (t, j); one warp per
// (query row, head)
extern "C" __global__ void attention_backward_dq(float* dq, float* dscores, const float* dout,
                                                 const float* att, const float* k, const float* v,
                                                 const int* start, int B, int T, int NH, int NKV,
                                                 int HS, long dq_stride, long k_stride,
                                                 long v_stride) {
    long gw = (long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (gw >= (long)B * T * NH) return;
    int lane = threadIdx.x % WARP;
    int h = gw % NH;
    long n = gw / NH;  // row b * T + t
    int b = n / T, t = n % T;
    int st = start[b];
    if (t < st) return;
    int kvh = h / (NH / NKV);
    long bh = (long)b * NH + h;
    const float* p = att + (bh * T + t) * T;
    float* ds = dscores + (bh * T + t) * T;
    const float* kbase = k + (long)b * T * k_stride + (long)kvh * HS;
    const float* vbase = v + (long)b * T * v_stride + (long)kvh * HS;
    float g[4], acc[4];
#pragma unroll
    for (int d = 0; d < 4; d++) {
        int idx = lane + WARP * d;
        g[d] = idx < HS ? dout[n * NH * HS + (long)h * HS + idx] : 0.0f;
        acc[d] = 0.0f;
    }
    // dp_j = dout . v_j, recomputed in the second loop rather than stored (the warp sums are the
    // same both times, so both loops see the same bits).
    float pdp = 0.0f;
    for (int j = st; j <= t; j++) {
        const float* vrow = vbase + j * v_stride;
        float dp = 0.0f;
#pragma unroll
        for (int d = 0; d < 4; d++) {
            int idx = lane + WARP * d;
            if (idx < HS) dp += g[d] * vrow[idx];
        }
        pdp += p[j] * warp_sum(dp);
    }
    float scale = rsqrtf((float)HS);
    for (int j = st; j <= t; j++) {
        const float* vrow = vbase + j * v_stride;
        const float* krow = kbase + j * k_stride;
        float dp = 0.0f;
#pragma unroll
        for (int d = 0; d < 4; d++) {
            int idx = lane + WARP * d;
            if (idx < HS) dp += g[d] * vrow[idx];
        }
        float s = p[j] * (warp_sum(dp) - pdp) * scale;
        if (lane == 0) ds[j] = s;
#pragma unroll
        for (int d = 0; d < 4; d++) {
            int idx = lane + WARP * d;
            if (idx < HS) acc[d] += s * krow[idx];
        }
    }
    float* dqrow = dq + n * dq_stride + (long)h * HS;
#pragma unroll
    for (int d = 0; d < 4; d++) {
        int idx = lane + WARP * d;
        if (idx < HS) dqrow[idx] += acc[d];
    }
}

// dk, dv (B*T rows, NKV*HS) += ... from dscores and att; one warp per (key row, kv head)
extern "C" __global__ void attention_backward_dkv(float* dk, float* dv, const float* dout,
                                                  const float* att, const float* dscores,
                                                  const float* q, const int* start, int B, int T,
                                                  int NH, int NKV, int HS, long q_stride,
                                                  long dk_stride, long dv_stride) {
    long gw = (long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (gw >= (long)B * T * NKV) return;
    int lane = threadIdx.x % WARP;
    int kvh = gw % NKV;
    long n = gw / NKV;  // key row b * T + j
    int b = n / T, j = n % T;
    if (j < start[b]) return;
    int group = NH / NKV;
    float ak[4] = {0.0f, 0.0f, 0.0f, 0.0f}, av[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        long bh = (long)b * NH + h;
        for (int t = j; t < T; t++) {
            float p = att[(bh * T + t) * T + j];
            float s = dscores[(bh * T + t) * T + j];
            long row = (long)b * T + t;
            const float* g = dout + row * NH * HS + (long)h * HS;
            const float* qrow = q + row * q_stride + (long)h * HS;
#pragma unroll
            for (int d = 0; d < 4; d++) {
                int idx = lane + WARP * d;
                if (idx < HS) {
                    av[d] += p * g[idx];
                    ak[d] += s * qrow[idx];
                }
            }
        }
    }
    float* dkrow = dk + n * dk_stride + (long)kvh * HS;
    float* dvrow = dv + n * dv_stride + (long)kvh * HS;
#pragma unroll
    for (int d = 0; d < 4; d++) {
        int idx = lane + WARP * d;
        if (idx < HS) {
            dkrow[idx] += ak[d];
            dvrow[idx] += av[d];
        }
    }
}
