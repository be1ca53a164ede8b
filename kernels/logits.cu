// The language-model head's row gather, mirroring src/cpu/ops/logits.rs; its product runs through
// kernels/sgemm.cu and its backward scatter through embedding.cu's `embedding_backward`.
#include "common.cuh"

// out (P, C) = inp[rows[p]]   (the rows whose logits are needed)
extern "C" __global__ void gather_rows(float* out, const float* inp, const int* rows, int P, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)P * C) return;
    int p = i / C, c = i % C;
    out[i] = inp[(long)rows[p] * C + c];
}

// out[rows[p]] = inp (P, C)[p]: gather_rows the other way (a decoding step's rows into the
// training layout of a recorded rollout); the rows are distinct
extern "C" __global__ void scatter_rows(float* out, const float* inp, const int* rows, int P, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)P * C) return;
    int p = i / C, c = i % C;
    out[(long)rows[p] * C + c] = inp[i];
}
