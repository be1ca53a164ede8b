// Scaled dot-product attention, mirroring src/cpu/ops/attention.rs (causal, GPT-2 and Llama) and
// src/cpu/ops/encoder_attention.rs (bidirectional, BERT). One warp per (row, head, query); keys are
// visited once with an online softmax, so no T x T score matrix is stored. Heads up to 128 wide.
#include "common.cuh"

// out (B, Tq, NH*HS) = softmax(scale * q k^T over keys j in [kstart[b], kend[b]), and j <= q_offset + i
// when causal) @ v. q (B, Tq, *), k and v (B, Tk, *) with row strides given in floats; query head h
// reads key/value head h / (NH / NKV) (grouped-query attention). A query with no visible key gets 0.
extern "C" __global__ void attention_forward(float* out, const float* q, const float* k,
                                             const float* v, const int* kstart, const int* kend,
                                             int B, int NH, int NKV, int HS, int Tq, int Tk,
                                             int q_offset, int causal, long q_stride, long k_stride,
                                             long v_stride, long out_stride, float scale) {
    long gw = (long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (gw >= (long)B * NH * Tq) return;
    int i = gw % Tq;
    int h = (gw / Tq) % NH;
    int b = gw / ((long)Tq * NH);
    int kvh = h / (NH / NKV);
    const float* qrow = q + ((long)b * Tq + i) * q_stride + (long)h * HS;
    float qr[4], acc[4];
#pragma unroll
    for (int d = 0; d < 4; d++) {
        int idx = lane + WARP * d;
        qr[d] = idx < HS ? qrow[idx] * scale : 0.0f;
        acc[d] = 0.0f;
    }
    int j0 = kstart ? kstart[b] : 0;
    int j1 = kend ? kend[b] : Tk;
    if (causal) j1 = min(j1, q_offset + i + 1);
    float m = -INFINITY, l = 0.0f;
    for (int j = j0; j < j1; j++) {
        const float* krow = k + ((long)b * Tk + j) * k_stride + (long)kvh * HS;
        const float* vrow = v + ((long)b * Tk + j) * v_stride + (long)kvh * HS;
        float s = 0.0f;
#pragma unroll
        for (int d = 0; d < 4; d++) {
            int idx = lane + WARP * d;
            if (idx < HS) s += qr[d] * krow[idx];
        }
        s = warp_sum(s);
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
    float* orow = out + ((long)b * Tq + i) * out_stride + (long)h * HS;
#pragma unroll
    for (int d = 0; d < 4; d++) {
        int idx = lane + WARP * d;
        if (idx < HS) orow[idx] = l > 0.0f ? acc[d] / l : 0.0f;
    }
}

// cache_k, cache_v (B, Tmax, W) at position pos[b] <- k, v (B, W) with row strides k_stride, v_stride
// (the KV-cache append of one decoding step)
extern "C" __global__ void kv_append(float* cache_k, float* cache_v, const float* k, const float* v,
                                     const int* pos, int B, int Tmax, int W, long k_stride,
                                     long v_stride) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)B * W) return;
    int b = i / W, c = i % W;
    long dst = ((long)b * Tmax + pos[b]) * W + c;
    cache_k[dst] = k[(long)b * k_stride + c];
    cache_v[dst] = v[(long)b * v_stride + c];
}
