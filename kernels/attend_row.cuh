// The attention row shared by kernels/attention.cu (causal, src/cpu/ops/attention.rs) and
// kernels/encoder_attention.cu (bidirectional, src/cpu/ops/encoder_attention.rs): one warp per
// (query row, head) visits the keys once with an online softmax, so no T x T score matrix is
// needed. Heads up to 128 wide.
#pragma once
#include "common.cuh"

// One query row of one head: orow (HS) = softmax(scale q.k_j over the visible j) @ v_j, for j in
// [j0, j1) with key_ok[j] (when given). k_j = kbase + j * kv_stride (same for v). No visible key -> 0.
// With prow, also the probabilities prow (row_len): 0 outside the visible keys.
__device__ void attend_row(float* orow, float* prow, int row_len, const float* qrow,
                           const float* kbase, const float* vbase, long k_stride, long v_stride,
                           int j0, int j1, const int* key_ok, int HS, float scale) {
    int lane = threadIdx.x % WARP;
    float qr[4], acc[4];
#pragma unroll
    for (int d = 0; d < 4; d++) {
        int idx = lane + WARP * d;
        qr[d] = idx < HS ? qrow[idx] * scale : 0.0f;
        acc[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j = j0; j < j1; j++) {
        if (key_ok && !key_ok[j]) continue;
        const float* krow = kbase + j * k_stride;
        const float* vrow = vbase + j * v_stride;
        float s = 0.0f;
#pragma unroll
        for (int d = 0; d < 4; d++) {
            int idx = lane + WARP * d;
            if (idx < HS) s += qr[d] * krow[idx];
        }
        s = warp_sum(s);
        // The lane that normalises probability j below keeps its score, so no lane reads another's.
        if (prow && lane == j % WARP) prow[j] = s;
        float mn = fmaxf(m, s);
        float corr = expf(m - mn);
        float p = expf(s - mn);
        l = l * corr + p;
#pragma unroll
        for (int d = 0; d < 4; d++) {
            int idx = lane + WARP * d;
            if (idx < HS) acc[d] = acc[d] * corr + p * vrow[idx];
        }
        m = mn;
    }
#pragma unroll
    for (int d = 0; d < 4; d++) {
        int idx = lane + WARP * d;
        if (idx < HS) orow[idx] = l > 0.0f ? acc[d] / l : 0.0f;
    }
    if (!prow) return;
    for (int j = lane; j < row_len; j += WARP) {
        bool seen = j >= j0 && j < j1 && (!key_ok || key_ok[j]);
        prow[j] = seen ? expf(prow[j] - m) / l : 0.0f;
    }
}
