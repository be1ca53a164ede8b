// Residual connection, mirroring src/cpu/ops/residual.rs.
#include "common.cuh"

// out (n) = a + b
extern "C" __global__ void residual_forward(float* out, const float* a, const float* b, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = a[i] + b[i];
}

// da (n) += dout; db (n) += dout
extern "C" __global__ void residual_backward(float* da, float* db, const float* dout, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    da[i] += dout[i];
    db[i] += dout[i];
}
