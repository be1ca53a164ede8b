// Dense products, mirroring src/cpu/ops/matmul.rs (Conv1D layout, w (C, OC)) and the head
// product of src/cpu/ops/logits.rs (w (OC, C), e.g. the tied wte). Our own tiled kernel: each block
// computes a BM x 128 tile of the output with 256 threads, TM x 8 outputs per thread, staging
// 8-wide slices of both operands through shared memory. Edges are zero-filled on load and skipped
// on store, so any shape works. Two tile heights: 128 rows, and 32 rows for products of few rows
// (a decoding step's), which would otherwise spend most of a 128-row tile on rows that do not
// exist and leave most of the device without a block.

#define BN 128
#define BK 8
#define TN 8

// BM / TM must be 16: the 256 threads form a 16 x 16 grid of TM x TN sub-tiles.
template <int BM, int TM, bool TRANS_B>
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
            int m = e / BK, k = e % BK;
            int gm = row0 + m, gk = k0 + k;
            As[k][m] = (gm < M && gk < K) ? a[(long)gm * K + gk] : 0.0f;
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
    gemm_tile<128, 8, false>(out, inp, w, bias, N, OC, C, 0);
}

// matmul_forward in 32-row tiles, for few rows; grid (ceil(OC/128), ceil(N/32)), 256 threads
extern "C" __global__ void __launch_bounds__(256) matmul_forward_few_rows(float* out, const float* inp,
                                                                          const float* w, const float* bias,
                                                                          int N, int C, int OC) {
    gemm_tile<32, 2, false>(out, inp, w, bias, N, OC, C, 0);
}

// out (N, OC) = inp (N, C) @ w^T + bias, with w stored (OC, C); same launch shape as matmul_forward
extern "C" __global__ void __launch_bounds__(256) matmul_nt_forward(float* out, const float* inp,
                                                                    const float* w, const float* bias,
                                                                    int N, int C, int OC) {
    gemm_tile<128, 8, true>(out, inp, w, bias, N, OC, C, 0);
}

// matmul_nt_forward in 32-row tiles, for few rows (a decoding step's head)
extern "C" __global__ void __launch_bounds__(256) matmul_nt_forward_few_rows(float* out, const float* inp,
                                                                             const float* w, const float* bias,
                                                                             int N, int C, int OC) {
    gemm_tile<32, 2, true>(out, inp, w, bias, N, OC, C, 0);
}
