// Embeddings, layer normalisation, GELU and residual: one kernel per CPU function of
// src/cpu/ops/{embedding,layernorm,gelu,residual}.rs, forward direction.
#include "common.cuh"

// out (N, C) = wte[ids[n]] + wpe[pos[n]]
extern "C" __global__ void embedding_forward(float* out, const unsigned* ids, const int* pos,
                                             const float* wte, const float* wpe, int N, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)N * C) return;
    int n = i / C, c = i % C;
    float v = wte[(long)ids[n] * C + c];
    if (wpe) v += wpe[(long)pos[n] * C + c];
    out[i] = v;
}

// out (N, C) = wte[ids[n]] + wpe[pos[n]] + wtt[types[n]]   (BERT: word + position + token type)
extern "C" __global__ void bert_embedding_forward(float* out, const unsigned* ids, const int* pos,
                                                  const unsigned* types, const float* wte,
                                                  const float* wpe, const float* wtt, int N, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)N * C) return;
    int n = i / C, c = i % C;
    out[i] = wte[(long)ids[n] * C + c] + wpe[(long)pos[n] * C + c] + wtt[(long)types[n] * C + c];
}

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

#define GELU_SCALE 0.7978845608f

// out (n) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
extern "C" __global__ void gelu_tanh_forward(float* out, const float* inp, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = inp[i];
    out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
}

// out (n) = 0.5 x (1 + erf(x / sqrt 2))
extern "C" __global__ void gelu_erf_forward(float* out, const float* inp, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = inp[i];
    out[i] = 0.5f * x * (1.0f + erff(x * 0.7071067812f));
}

// out (n) = a + b
extern "C" __global__ void residual_forward(float* out, const float* a, const float* b, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = a[i] + b[i];
}

// out (P, C) = inp[rows[p]]   (the rows whose logits are needed)
extern "C" __global__ void gather_rows(float* out, const float* inp, const int* rows, int P, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)P * C) return;
    int p = i / C, c = i % C;
    out[i] = inp[(long)rows[p] * C + c];
}
