// Scaled dot-product attention, mirroring src/cpu/ops/attention.rs (`attention_forward`,
// `attention_cached_forward`: causal, left padding, grouped-query heads) and
// src/cpu/ops/encoder_attention.rs (`encoder_attention_forward`: bidirectional over packed
// sequences, BERT). One warp per (query row, head); keys are visited once with an online softmax,
// so no T x T score matrix is needed; training's forward saves the probabilities (B, H, T, T) for
// attention_backward.cu, as the CPU's does. Heads up to 128 wide.
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

// out (B*T, NH*HS) = causal attention of row b's queries over its keys [start[b], t]; q, k, v point
// at their first element (the host adds the layout offsets) with row strides in floats; att
// (B, NH, T, T) receives the probabilities when non-null
extern "C" __global__ void attention_forward(float* out, float* att, const float* q, const float* k,
                                             const float* v, const int* start, int B, int T,
                                             int NH, int NKV, int HS, long q_stride, long k_stride,
                                             long v_stride) {
    long gw = (long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (gw >= (long)B * T * NH) return;
    int h = gw % NH;
    long n = gw / NH;  // row b * T + t
    int b = n / T, t = n % T;
    int kvh = h / (NH / NKV);
    float* prow = att ? att + (((long)b * NH + h) * T + t) * T : nullptr;
    attend_row(out + n * NH * HS + (long)h * HS, prow, T, q + n * q_stride + (long)h * HS,
               k + (long)b * T * k_stride + (long)kvh * HS, v + (long)b * T * v_stride + (long)kvh * HS,
               k_stride, v_stride, start[b], t + 1, nullptr, HS, rsqrtf((float)HS));
}

// out (B*Tq, NH*HS): query i of row b sits at position p0 + i and attends to the cached keys
// [start[b], p0 + i]; kcache, vcache (B, Tmax, NKV*HS)
extern "C" __global__ void attention_cached_forward(float* out, const float* q, long q_stride,
                                                    const float* kcache, const float* vcache,
                                                    const int* start, int p0, int Tq, int Tmax,
                                                    int B, int NH, int NKV, int HS) {
    long gw = (long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (gw >= (long)B * Tq * NH) return;
    int h = gw % NH;
    long n = gw / NH;  // row b * Tq + i
    int b = n / Tq, i = n % Tq;
    int kvh = h / (NH / NKV);
    long kv_w = (long)NKV * HS;
    attend_row(out + n * NH * HS + (long)h * HS, nullptr, 0, q + n * q_stride + (long)h * HS,
               kcache + (long)b * Tmax * kv_w + (long)kvh * HS,
               vcache + (long)b * Tmax * kv_w + (long)kvh * HS, kv_w, kv_w, start[b], p0 + i + 1,
               nullptr, HS, rsqrtf((float)HS));
}

// out (N, C) = bidirectional attention within each packed sequence s, rows [starts[s], starts[s+1]),
// over the keys whose key_mask is set; qkv (N, 3C) is BERT's fused q | k | v
extern "C" __global__ void encoder_attention_forward(float* out, const float* qkv,
                                                     const int* key_mask, const int* starts,
                                                     int n_seq, int C, int NH) {
    long gw = (long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    int N = starts[n_seq];
    if (gw >= (long)N * NH) return;
    int h = gw % NH;
    int r = gw / NH;
    int lo = 0, hi = n_seq;  // the sequence holding row r: starts[s] <= r < starts[s + 1]
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (starts[mid] <= r) lo = mid; else hi = mid;
    }
    int HS = C / NH;
    long stride = 3L * C;
    attend_row(out + (long)r * C + (long)h * HS, nullptr, 0, qkv + r * stride + (long)h * HS,
               qkv + C + (long)h * HS, qkv + 2L * C + (long)h * HS, stride, stride, starts[lo],
               starts[lo + 1], key_mask, HS, rsqrtf((float)HS));
}

// cache_k, cache_v (B, Tmax, W) at positions p0 .. p0 + Tq <- k, v (B*Tq, W) with row strides
// k_stride, v_stride (the KV-cache append of a prefill or of one decoding step; left padding puts
// every row at the same position index)
extern "C" __global__ void kv_append(float* cache_k, float* cache_v, const float* k, const float* v,
                                     int p0, int B, int Tq, int Tmax, int W, long k_stride,
                                     long v_stride) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)B * Tq * W) return;
    int c = i % W;
    long r = i / W;  // row b * Tq + t
    int b = r / Tq, t = r % Tq;
    long dst = ((long)b * Tmax + p0 + t) * W + c;
    cache_k[dst] = k[r * k_stride + c];
    cache_v[dst] = v[r * v_stride + c];
}
