// Llama-family layers, mirroring src/cpu/ops/{rmsnorm,rope,swiglu}.rs, forward direction.
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

// out (N, F) = silu(gate) * up, where gate and up are (N, F)
extern "C" __global__ void swiglu_forward(float* out, const float* gate, const float* up, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
}
