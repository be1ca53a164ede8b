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

// For each tensor t of a list: out_t[rows[p]] = inp_t (P, C_t)[p], with out_t = dst[t],
// inp_t = src[t] (addresses) and C_t = widths[t]: `scatter_rows` of several tensors by one row
// map, in one launch. Grid (P, T): block (p, t) copies row p of tensor t.
extern "C" __global__ void scatter_rows_list(const unsigned long long* dst, const unsigned long long* src,
                                             const int* widths, const int* rows, int P) {
    int p = blockIdx.x, t = blockIdx.y, C = widths[t];
    float* out = reinterpret_cast<float*>(dst[t]) + (long)rows[p] * C;
    const float* inp = reinterpret_cast<const float*>(src[t]) + (long)p * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) out[c] = inp[c];
}
