// Bidirectional attention over packed sequences (BERT), mirroring
// src/cpu/ops/encoder_attention.rs: one warp per (row, head) through attend_row.cuh. Forward only.
#include "common.cuh"
#include "attend_row.cuh"

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
