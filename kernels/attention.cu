// Causal attention with left padding and grouped-query heads, mirroring src/cpu/ops/attention.rs.
// Heads up to 128 wide. q, k, v and their gradients point at their first element (the host adds
// the layout offsets) with row strides in floats.
// - Forward (`attention_forward`, `attention_cached_forward`): one warp per (query row, head)
//   through attend_row.cuh; training's forward saves the probabilities (B, NH, T, T) for the
//   backward, as the CPU's does. `kv_append` fills the cache the cached forward reads.
// - Backward (`attention_backward`) through the saved probabilities att (B, NH, T, T), in two
//   kernels, so that every gradient element is one warp's sum in a fixed order (no atomics):
//   per (query row, head): the scores' gradient dscores = p (dp - sum p dp) / sqrt(HS), with
//   dp = dout . v, saved (B, NH, T, T), and dq += dscores @ k; per (key row, kv head):
//   dk += dscores^T @ q and dv += att^T @ dout over the group's query heads, in the CPU's order
//   (heads, then queries). Rows before start[b] get no gradient.
#include "common.cuh"
#include "attend_row.cuh"

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
// [start[b], p0 + i]; kcache, vcache (B, Tmax, NKV*HS); att (B, NH, Tmax, Tmax), when non-null,
// receives the probabilities of those queries' rows, laid out as training's forward saves them
// for a batch of Tmax positions (a rollout recorded for its update)
extern "C" __global__ void attention_cached_forward(float* out, float* att, const float* q,
                                                    long q_stride, const float* kcache,
                                                    const float* vcache, const int* start, int p0,
                                                    int Tq, int Tmax, int B, int NH, int NKV,
                                                    int HS) {
    long gw = (long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (gw >= (long)B * Tq * NH) return;
    int h = gw % NH;
    long n = gw / NH;  // row b * Tq + i
    int b = n / Tq, i = n % Tq;
    int kvh = h / (NH / NKV);
    long kv_w = (long)NKV * HS;
    float* prow = att ? att + (((long)b * NH + h) * Tmax + p0 + i) * Tmax : nullptr;
    attend_row(out + n * NH * HS + (long)h * HS, prow, Tmax, q + n * q_stride + (long)h * HS,
               kcache + (long)b * Tmax * kv_w + (long)kvh * HS,
               vcache + (long)b * Tmax * kv_w + (long)kvh * HS, kv_w, kv_w, start[b], p0 + i + 1,
               nullptr, HS, rsqrtf((float)HS));
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
