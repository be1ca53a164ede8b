// Rotary position embeddings (Hugging Face rotate-half), mirroring src/cpu/ops/rope.rs.
#include "common.cuh"

// x (N, H, HS) rotated in place by position pos[n] (Hugging Face rotate-half: pairs (d, d + HS/2))
// with the tables cos, sin (max_pos, HS/2) that src/cpu/ops/rope.rs's `rope_table` makes, so both
// backends turn by the very same f32 angles; row stride in floats
extern "C" __global__ void rope_forward(float* x, const int* pos, const float* cos_t,
                                        const float* sin_t, int N, int H, int HS, long stride) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    int half = HS / 2;
    if (i >= (long)N * H * half) return;
    int d = i % half;
    int h = (i / half) % H;
    long n = i / ((long)half * H);
    float c = cos_t[(long)pos[n] * half + d], s = sin_t[(long)pos[n] * half + d];
    float* row = x + n * stride + (long)h * HS;
    float x1 = row[d], x2 = row[d + half];
    row[d] = x1 * c - x2 * s;
    row[d + half] = x2 * c + x1 * s;
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
