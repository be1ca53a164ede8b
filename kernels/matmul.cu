// Dense products, mirroring src/cpu/ops/matmul.rs (Conv1D layout, w (C, OC)), src/cpu/ops/linear.rs
// (w (OC, C)) and the head product of src/cpu/ops/logits.rs (w (OC, C), e.g. the tied wte), forward
// and backward. Our own tiled kernel: each block
// computes a BM x 128 tile of the output with 256 threads, TM x 8 outputs per thread, staging
// 8-wide slices of both operands through shared memory. Edges are zero-filled on load and skipped
// on store, so any shape works. Two tile heights: 128 rows, and 32 rows for products of few rows
// (a decoding step's), which would otherwise spend most of a 128-row tile on rows that do not
// exist and leave most of the device without a block. Every output element is one thread's sum in
// a fixed order, so the products are deterministic; backward products add into their output.
#include "common.cuh"

#define BN 128
#define BK 8
#define TN 8

// out (M, N) [+]= op(a) (M, K) @ op(b) (K, N) + bias (N): a is stored (M, K), or (K, M) with
// TRANS_A; b is stored (K, N), or (N, K) with TRANS_B.
// BM / TM must be 16: the 256 threads form a 16 x 16 grid of TM x TN sub-tiles.
template <int BM, int TM, bool TRANS_A, bool TRANS_B>
__device__ __forceinline__ void gemm_tile(float* out, const float* a, const float* b,
                                          const float* bias, int M, int N, int K, int accumulate) {
    static_assert(BM / TM == 16, "256 threads as 16 x 16 sub-tiles");
    __shared__ float As[BK][BM];
    __shared__ float Bs[BK][BN];
    const int tid = threadIdx.x;
    const int tx = tid % (BN / TN), ty = tid / (BN / TN);
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int e = tid; e < BM * BK; e += 256) {
            // Neighbouring threads read neighbouring addresses in either layout.
            int m = TRANS_A ? e % BM : e / BK, k = TRANS_A ? e / BM : e % BK;
            int gm = row0 + m, gk = k0 + k;
            float v = 0.0f;
            if (gm < M && gk < K) v = TRANS_A ? a[(long)gk * M + gm] : a[(long)gm * K + gk];
            As[k][m] = v;
        }
#pragma unroll
        for (int r = 0; r < (BN * BK) / 256; r++) {
            int e = tid + 256 * r;
            int k, n;
            if (TRANS_B) {
                n = e / BK;
                k = e % BK;
            } else {
                k = e / BN;
                n = e % BN;
            }
            int gn = col0 + n, gk = k0 + k;
            float v = 0.0f;
            if (gn < N && gk < K) v = TRANS_B ? b[(long)gn * K + gk] : b[(long)gk * N + gn];
            Bs[k][n] = v;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; k++) {
            float ar[TM], br[TN];
#pragma unroll
            for (int i = 0; i < TM; i++) ar[i] = As[k][ty * TM + i];
#pragma unroll
            for (int j = 0; j < TN; j++) br[j] = Bs[k][tx * TN + j];
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; i++) {
        int gm = row0 + ty * TM + i;
        if (gm >= M) continue;
#pragma unroll
        for (int j = 0; j < TN; j++) {
            int gn = col0 + tx * TN + j;
            if (gn >= N) continue;
            float v = acc[i][j];
            if (bias) v += bias[gn];
            if (accumulate) v += out[(long)gm * N + gn];
            out[(long)gm * N + gn] = v;
        }
    }
}

// out (N, OC) = inp (N, C) @ w (C, OC) + bias (OC); grid (ceil(OC/128), ceil(N/128)), 256 threads
extern "C" __global__ void __launch_bounds__(256) matmul_forward(float* out, const float* inp,
                                                                 const float* w, const float* bias,
                                                                 int N, int C, int OC) {
    gemm_tile<128, 8, false, false>(out, inp, w, bias, N, OC, C, 0);
}

// matmul_forward in 32-row tiles, for few rows; grid (ceil(OC/128), ceil(N/32)), 256 threads
extern "C" __global__ void __launch_bounds__(256) matmul_forward_few_rows(float* out, const float* inp,
                                                                          const float* w, const float* bias,
                                                                          int N, int C, int OC) {
    gemm_tile<32, 2, false, false>(out, inp, w, bias, N, OC, C, 0);
}

// out (N, OC) = inp (N, C) @ w^T + bias, with w stored (OC, C); same launch shape as matmul_forward
extern "C" __global__ void __launch_bounds__(256) matmul_nt_forward(float* out, const float* inp,
                                                                    const float* w, const float* bias,
                                                                    int N, int C, int OC) {
    gemm_tile<128, 8, false, true>(out, inp, w, bias, N, OC, C, 0);
}

// matmul_nt_forward in 32-row tiles, for few rows (a decoding step's head)
extern "C" __global__ void __launch_bounds__(256) matmul_nt_forward_few_rows(float* out, const float* inp,
                                                                             const float* w, const float* bias,
                                                                             int N, int C, int OC) {
    gemm_tile<32, 2, false, true>(out, inp, w, bias, N, OC, C, 0);
}

// Backward. The `_few_rows` variants take the same arguments in 32-row tiles (grid
// (ceil(cols/128), ceil(rows/32))), for outputs of fewer than 128 rows.

// dinp (N, C) += dout (N, OC) @ w^T, w (C, OC): matmul_backward's input gradient
extern "C" __global__ void __launch_bounds__(256) matmul_backward_dinp(float* dinp, const float* dout,
                                                                       const float* w, int N, int C,
                                                                       int OC) {
    gemm_tile<128, 8, false, true>(dinp, dout, w, nullptr, N, C, OC, 1);
}

extern "C" __global__ void __launch_bounds__(256) matmul_backward_dinp_few_rows(
    float* dinp, const float* dout, const float* w, int N, int C, int OC) {
    gemm_tile<32, 2, false, true>(dinp, dout, w, nullptr, N, C, OC, 1);
}

// dw (C, OC) += inp^T @ dout, inp (N, C), dout (N, OC): matmul_backward's weight gradient, and
// linear_backward's dw (O, I) += dout^T @ inp with inp = dout (N, O), dout = inp (N, I)
extern "C" __global__ void __launch_bounds__(256) matmul_backward_dweight(float* dw, const float* inp,
                                                                          const float* dout, int N,
                                                                          int C, int OC) {
    gemm_tile<128, 8, true, false>(dw, inp, dout, nullptr, C, OC, N, 1);
}

extern "C" __global__ void __launch_bounds__(256) matmul_backward_dweight_few_rows(
    float* dw, const float* inp, const float* dout, int N, int C, int OC) {
    gemm_tile<32, 2, true, false>(dw, inp, dout, nullptr, C, OC, N, 1);
}

// dinp (N, I) += dout (N, O) @ w, w (O, I): linear_backward's (and the head's) input gradient
extern "C" __global__ void __launch_bounds__(256) linear_backward_dinp(float* dinp, const float* dout,
                                                                       const float* w, int N, int I,
                                                                       int O) {
    gemm_tile<128, 8, false, false>(dinp, dout, w, nullptr, N, I, O, 1);
}

extern "C" __global__ void __launch_bounds__(256) linear_backward_dinp_few_rows(
    float* dinp, const float* dout, const float* w, int N, int I, int O) {
    gemm_tile<32, 2, false, false>(dinp, dout, w, nullptr, N, I, O, 1);
}

// db (OC) += sum over the N rows of dout (N, OC); blocks of (32, 16) threads, one per 32 columns
extern "C" __global__ void __launch_bounds__(512) matmul_backward_dbias(float* db, const float* dout,
                                                                        int N, int OC) {
    column_sums<1>(N, OC, [&](int r, int c, float* s) { s[0] += dout[(long)r * OC + c]; },
                   [&](int c, const float* s) { db[c] += s[0]; });
}
