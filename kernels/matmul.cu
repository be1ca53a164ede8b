// The Conv1D layer's bias gradient, mirroring src/cpu/ops/matmul.rs; its products (forward, input
// and weight gradients) run through kernels/sgemm.cu, as the CPU's run through cpu::gemm::sgemm.
#include "common.cuh"

// db (OC) += sum over the N rows of dout (N, OC); blocks of (32, 16) threads, one per 32 columns
// and stretch of rows (partial and counters as column_sums takes them, or null for one stretch)
extern "C" __global__ void __launch_bounds__(512) matmul_backward_dbias(float* db, const float* dout,
                                                                        int N, int OC, float* partial,
                                                                        unsigned* counters) {
    column_sums<1>(N, OC, partial, counters, [&](int r, int c, float* s) { s[0] += dout[(long)r * OC + c]; },
                   [&](int c, const float* s) { db[c] += s[0]; });
}
