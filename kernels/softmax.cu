// Log-probabilities of chosen tokens (log_softmax then gather, fused) and full-vocabulary entropy,
// mirroring src/cpu/ops/softmax.rs. One block per row of logits.
#include "common.cuh"

// lp (P) = log_softmax(logits[p] * inv_temp)[targets[p]]; logits (P, V)
extern "C" __global__ void log_softmax_gather_forward(float* lp, const float* logits, const unsigned* targets,
                                           int P, int V, float inv_temp) {
    int p = blockIdx.x;
    if (p >= P) return;
    const float* x = logits + (long)p * V;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, x[i] * inv_temp);
    m = block_max(m);
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf(x[i] * inv_temp - m);
    s = block_sum(s);
    if (threadIdx.x == 0) lp[p] = x[targets[p]] * inv_temp - m - logf(s);
}

// ent (P) = -sum_v softmax(logits[p])_v log softmax(logits[p])_v; logits (P, V)
extern "C" __global__ void entropy_forward(float* ent, const float* logits, int P, int V) {
    int p = blockIdx.x;
    if (p >= P) return;
    const float* x = logits + (long)p * V;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, x[i]);
    m = block_max(m);
    // H = log Z - sum e^(x-m) (x-m) / Z, with Z = sum e^(x-m)
    float z = 0.0f, zx = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float e = expf(x[i] - m);
        z += e;
        zx += e * (x[i] - m);
    }
    z = block_sum(z);
    zx = block_sum(zx);
    if (threadIdx.x == 0) ent[p] = logf(z) - zx / z;
}
