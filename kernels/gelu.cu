// GELU, mirroring src/cpu/ops/gelu.rs: the tanh approximation (GPT-2), forward and backward, and
// the exact form with erf (BERT), forward.
#include "common.cuh"

#define GELU_SCALE 0.7978845608f

// out (n) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
extern "C" __global__ void gelu_tanh_forward(float* out, const float* inp, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = inp[i];
    out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
}

// dinp (n) += dout * gelu_tanh'(inp)
extern "C" __global__ void gelu_tanh_backward(float* dinp, const float* inp, const float* dout,
                                              long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = inp[i];
    float t = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
    float local = 0.5f * (1.0f + t) +
                  0.5f * x * (1.0f - t * t) * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
    dinp[i] += local * dout[i];
}

// out (n) = 0.5 x (1 + erf(x / sqrt 2))
extern "C" __global__ void gelu_erf_forward(float* out, const float* inp, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = inp[i];
    out[i] = 0.5f * x * (1.0f + erff(x * 0.7071067812f));
}
