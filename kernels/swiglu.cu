// Llama's SiLU-gated product, mirroring src/cpu/ops/swiglu.rs.
#include "common.cuh"

// out (N, F) = silu(gate) * up, where gate and up are (N, F)
extern "C" __global__ void swiglu_forward(float* out, const float* gate, const float* up, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
}

// dgate (n) += dout up silu'(gate); dup (n) += dout silu(gate)
extern "C" __global__ void swiglu_backward(float* dgate, float* dup, const float* dout,
                                           const float* gate, const float* up, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i];
    float s = 1.0f / (1.0f + expf(-g));
    // d/dg (g s(g)) = s + g s (1 - s)
    dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    dup[i] += dout[i] * g * s;
}
