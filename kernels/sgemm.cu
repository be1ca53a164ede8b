// Dense products, mirroring src/cpu/gemm.rs: c (M, N) [+]= op(a) (M, K) @ op(b) (K, N) [+ bias (N)],
// all row-major. `a` is stored (M, K), or (K, M) when transposed; `b` is stored (K, N), or (N, K)
// when transposed. Kernel names give the two layouts: nn, nt (b transposed: the LM head and the
// Llama projections, w (OC, C)), tn (a transposed: weight gradients).
//
// Two families; src/cuda/sgemm.rs picks one, its tile and its grid from the shape (`plan`):
// - tiles (`sgemm_tile`): a block of 256 threads computes a BM x BN tile of c, each thread a
//   TM x TN sub-tile in registers. BK-deep slices of a and b pass through shared memory in two
//   buffers: the next slice travels from global memory into registers while the current one is
//   multiplied, so one barrier per slice suffices. Products that would give the device too few
//   blocks split K over blockIdx.z.
// - rows (`sgemm_rows_nn`, `sgemm_rows_nt`): products of at most 16 rows (a decoding step's),
//   which are bound by reading b once: each warp streams its own share of b, coalesced, against
//   every row of a, with no shared memory. The share is a slab of columns and a range of K.
// A split of K writes its partial product to `partial` (S, M, N) instead of c. The last of a
// tile's (or a warp's column slab's) S splits to finish adds them into c in order (s = 0, 1, ...),
// found by an integer counter per tile in `counters`. No float atomics: each element is a sum in
// a fixed order, so every product is deterministic and the same in every schedule.
//
// "_v4" kernels read both operands as float4 along their contiguous dimension; the planner picks
// them only when those dimensions are multiples of 4 and the buffers are 16-byte aligned.
#include "common.cuh"

#define BK 8
#define TILE_THREADS 256
// Padding of a shared-memory row: the transposing stores of K-contiguous operands then fall into
// distinct banks, and rows stay 16-byte aligned for the float4 reads.
#define PAD 4

// v[0..4) = the float4 at p (16-byte aligned) when `in`, else zeros.
__device__ __forceinline__ void load4(float* v, const float* p, bool in) {
    float4 x = in ? *reinterpret_cast<const float4*>(p) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
}

// Element (m, n) of a product, v: into c with the bias and what c held added (as asked), or, for
// split z of K, into the partial products (S, M, N) as it is.
__device__ __forceinline__ void put(float* c, float* partial, const float* bias, int accumulate, int M,
                                    int N, int z, int m, int n, float v) {
    if (partial) {
        partial[((long)z * M + m) * N + n] = v;
        return;
    }
    if (bias) v += bias[n];
    if (accumulate) v += c[(long)m * N + n];
    c[(long)m * N + n] = v;
}

// c[m, n] = the S splits' partial products at (m, n) added in order, + bias[n], + what c held
// (as asked). Read through L2 (`__ldcg`): other blocks wrote them during this launch.
__device__ __forceinline__ void sum_splits(float* c, const float* partial, const float* bias, int accumulate,
                                           int M, int N, int S, int m, int n) {
    long total = (long)M * N, i = (long)m * N + n;
    float v = 0.0f;
    for (int s = 0; s < S; s++) v += __ldcg(partial + s * total + i);
    if (bias) v += bias[n];
    if (accumulate) v += c[i];
    c[i] = v;
}

// `last_split_block` for a warp that owns its unit of c alone (the rows kernels).
__device__ __forceinline__ bool last_split_warp(unsigned* counter, int S) {
    __threadfence();
    __syncwarp();
    int last = 0;
    if (threadIdx.x % WARP == 0) {
        last = atomicAdd(counter, 1u) == (unsigned)(S - 1);
        if (last) atomicExch(counter, 0u);
    }
    last = __shfl_sync(0xffffffffu, last, 0);
    if (last) __threadfence();
    return last;
}

// One BK x R slice of an operand on its way from global to shared memory. The operand is R-wide
// (M for a, N for b) and K-deep: element (r, k) sits at p[r * ld + k] when K_CONTIG, else at
// p[k * ld + r]. Rows at or past `rows` and depths at or past `depth` read as zero.
template <int R, bool K_CONTIG, bool VEC>
struct Slice {
    static constexpr int V = VEC ? 4 : 1;
    static constexpr int COUNT = R * BK / V;  // vectors in the slice
    static constexpr int LOADS = (COUNT + TILE_THREADS - 1) / TILE_THREADS;
    float v[LOADS][V];

    // Vector e of the slice: its row and depth. Neighbouring threads read neighbouring addresses.
    __device__ __forceinline__ static void place(int e, int& r, int& k) {
        if constexpr (K_CONTIG) {
            r = e / (BK / V);
            k = (e % (BK / V)) * V;
        } else {
            k = e / (R / V);
            r = (e % (R / V)) * V;
        }
    }

    __device__ __forceinline__ void load(const float* p, long ld, int r0, int rows, int k0, int depth) {
#pragma unroll
        for (int i = 0; i < LOADS; i++) {
            int e = threadIdx.x + i * TILE_THREADS, r, k;
            place(e, r, k);
            int gr = r0 + r, gk = k0 + k;
            // With VEC, rows (K_CONTIG) or depths (else) come in whole vectors: the planner asks
            // that the contiguous extent be a multiple of 4, and slices start at multiples of 4.
            bool in = e < COUNT && gr < rows && gk < depth;
            const float* at = p + (K_CONTIG ? gr * ld + gk : gk * ld + gr);
            if constexpr (VEC) {
                load4(v[i], at, in);
            } else {
                v[i][0] = in ? *at : 0.0f;
            }
        }
    }

    __device__ __forceinline__ void store(float (*s)[R + PAD]) const {
#pragma unroll
        for (int i = 0; i < LOADS; i++) {
            int e = threadIdx.x + i * TILE_THREADS, r, k;
            place(e, r, k);
            if (e >= COUNT) continue;
            if constexpr (K_CONTIG) {
#pragma unroll
                for (int j = 0; j < V; j++) s[k + j][r] = v[i][j];
            } else if constexpr (VEC) {
                *reinterpret_cast<float4*>(&s[k][r]) = make_float4(v[i][0], v[i][1], v[i][2], v[i][3]);
            } else {
                s[k][r] = v[i][0];
            }
        }
    }
};

// Row (or column) i of a tile kernel thread's sub-tile, as an offset in the tile: t is the
// thread's ty (or tx).
__device__ __forceinline__ int owned(int i, int t) { return (i / 4) * 64 + t * 4 + i % 4; }

// The tile kernel's body. Thread (tx, ty) = (tid % 16, tid / 16) owns rows g * 64 + 4 ty + i and
// columns h * 64 + 4 tx + j of the tile (i, j < 4; g < BM / 64, h < BN / 64), so a quarter warp
// reads 128 contiguous bytes of b's slice and two addresses of a's. Split z covers depths
// [z * kc, min(K, (z + 1) * kc)).
template <int BM, int BN, bool TA, bool TB, bool VEC>
__device__ __forceinline__ void sgemm_tile(float* c, const float* a, const float* b, const float* bias,
                                           float* partial, unsigned* counters, int M, int N, int K, int kc,
                                           int accumulate) {
    constexpr int TM = BM / 16, TN = BN / 16;
    static_assert(TM % 4 == 0 && TN % 4 == 0, "sub-tiles are whole float4 groups");
    __shared__ __align__(16) float As[2][BK][BM + PAD];
    __shared__ __align__(16) float Bs[2][BK][BN + PAD];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int kb = blockIdx.z * kc, ke = min(K, kb + kc);
    const long lda = TA ? M : K, ldb = TB ? K : N;
    Slice<BM, !TA, VEC> sa;
    Slice<BN, TB, VEC> sb;

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = 0.0f;

    sa.load(a, lda, m0, M, kb, ke);
    sb.load(b, ldb, n0, N, kb, ke);
    sa.store(As[0]);
    sb.store(Bs[0]);
    __syncthreads();
    int buf = 0;
    for (int k0 = kb; k0 < ke; k0 += BK) {
        const bool more = k0 + BK < ke;
        if (more) {
            sa.load(a, lda, m0, M, k0 + BK, ke);
            sb.load(b, ldb, n0, N, k0 + BK, ke);
        }
#pragma unroll
        for (int k = 0; k < BK; k++) {
            float ar[TM], br[TN];
#pragma unroll
            for (int g = 0; g < TM / 4; g++) load4(&ar[g * 4], &As[buf][k][g * 64 + ty * 4], true);
#pragma unroll
            for (int h = 0; h < TN / 4; h++) load4(&br[h * 4], &Bs[buf][k][h * 64 + tx * 4], true);
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
        }
        // The other buffer was last read before the previous barrier.
        if (more) {
            sa.store(As[buf ^ 1]);
            sb.store(Bs[buf ^ 1]);
        }
        __syncthreads();
        buf ^= 1;
    }

#pragma unroll
    for (int i = 0; i < TM; i++) {
        int m = m0 + owned(i, ty);
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < TN; j++) {
            int n = n0 + owned(j, tx);
            if (n < N) put(c, partial, bias, accumulate, M, N, blockIdx.z, m, n, acc[i][j]);
        }
    }
    if (!partial || !last_split_block(counters + blockIdx.y * gridDim.x + blockIdx.x, gridDim.z)) return;
    for (int i = 0; i < TM; i++) {
        int m = m0 + owned(i, ty);
        for (int j = 0; j < TN && m < M; j++) {
            int n = n0 + owned(j, tx);
            if (n < N) sum_splits(c, partial, bias, accumulate, M, N, gridDim.z, m, n);
        }
    }
}

// The entry points: one per layout, tile and load width. Grid (ceil(N / BN), ceil(M / BM), S) blocks
// of 256 threads; c (M, N), bias (N) or null; with S > 1, partial (S, M, N) and counters (one per
// tile, all zero), else both null.
#define SGEMM_PARAMS                                                                                  \
    float *c, const float *a, const float *b, const float *bias, float *partial, unsigned *counters, \
    int M, int N, int K, int kc, int accumulate
#define SGEMM_ARGS c, a, b, bias, partial, counters, M, N, K, kc, accumulate
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nn_128x128(SGEMM_PARAMS) { sgemm_tile<128, 128, false, false, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nn_128x128_v4(SGEMM_PARAMS) { sgemm_tile<128, 128, false, false, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nn_128x64(SGEMM_PARAMS) { sgemm_tile<128, 64, false, false, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nn_128x64_v4(SGEMM_PARAMS) { sgemm_tile<128, 64, false, false, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nn_64x128(SGEMM_PARAMS) { sgemm_tile<64, 128, false, false, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nn_64x128_v4(SGEMM_PARAMS) { sgemm_tile<64, 128, false, false, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nn_64x64(SGEMM_PARAMS) { sgemm_tile<64, 64, false, false, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nn_64x64_v4(SGEMM_PARAMS) { sgemm_tile<64, 64, false, false, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nt_128x128(SGEMM_PARAMS) { sgemm_tile<128, 128, false, true, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nt_128x128_v4(SGEMM_PARAMS) { sgemm_tile<128, 128, false, true, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nt_128x64(SGEMM_PARAMS) { sgemm_tile<128, 64, false, true, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nt_128x64_v4(SGEMM_PARAMS) { sgemm_tile<128, 64, false, true, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nt_64x128(SGEMM_PARAMS) { sgemm_tile<64, 128, false, true, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nt_64x128_v4(SGEMM_PARAMS) { sgemm_tile<64, 128, false, true, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nt_64x64(SGEMM_PARAMS) { sgemm_tile<64, 64, false, true, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_nt_64x64_v4(SGEMM_PARAMS) { sgemm_tile<64, 64, false, true, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_tn_128x128(SGEMM_PARAMS) { sgemm_tile<128, 128, true, false, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_tn_128x128_v4(SGEMM_PARAMS) { sgemm_tile<128, 128, true, false, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_tn_128x64(SGEMM_PARAMS) { sgemm_tile<128, 64, true, false, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_tn_128x64_v4(SGEMM_PARAMS) { sgemm_tile<128, 64, true, false, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_tn_64x128(SGEMM_PARAMS) { sgemm_tile<64, 128, true, false, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_tn_64x128_v4(SGEMM_PARAMS) { sgemm_tile<64, 128, true, false, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_tn_64x64(SGEMM_PARAMS) { sgemm_tile<64, 64, true, false, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(256, 2) sgemm_tn_64x64_v4(SGEMM_PARAMS) { sgemm_tile<64, 64, true, false, true>(SGEMM_ARGS); }

// Rows, b stored (K, N). Warp w of the grid (ROWS_WARPS per block) owns the slab of 32 * V columns
// w % slabs and the depths [s * kc, min(K, (s + 1) * kc)) of split s = w / slabs; each lane owns
// V adjacent columns, so a warp reads 128 * V contiguous bytes of each row of b. a (M, K) is
// read by all lanes at once (one broadcast load, cached).
#define ROWS_WARPS 2
#define ROWS_DEPTH 8
template <int RM, bool VEC>
__device__ __forceinline__ void sgemm_rows_nn(float* c, const float* a, const float* b, const float* bias,
                                              float* partial, unsigned* counters, int M, int N, int K, int kc,
                                              int accumulate) {
    constexpr int V = VEC ? 4 : 1;
    const int lane = threadIdx.x % WARP;
    const int w = blockIdx.x * ROWS_WARPS + threadIdx.x / WARP;
    const int slabs = (N + WARP * V - 1) / (WARP * V);
    const int s = w / slabs, n = (w % slabs) * WARP * V + lane * V;
    const int kb = s * kc, ke = min(K, kb + kc);
    if (kb >= K) return;
    float acc[RM][V];
#pragma unroll
    for (int m = 0; m < RM; m++)
#pragma unroll
        for (int j = 0; j < V; j++) acc[m][j] = 0.0f;
    for (int k0 = kb; k0 < ke; k0 += ROWS_DEPTH) {
        // ROWS_DEPTH rows of b in flight before the first multiply: a decoding step's product is
        // a few round trips to memory, so the loads of one must not wait for another's.
        float bv[ROWS_DEPTH][V];
#pragma unroll
        for (int u = 0; u < ROWS_DEPTH; u++) {
            int k = k0 + u;
            bool in = k < ke && n < N;
            if constexpr (VEC) {
                load4(bv[u], b + (long)k * N + n, in);
            } else {
                bv[u][0] = in ? b[(long)k * N + n] : 0.0f;
            }
        }
#pragma unroll
        for (int m = 0; m < RM; m++) {
            if (m >= M) break;
            float av[ROWS_DEPTH];
#pragma unroll
            for (int q = 0; q < ROWS_DEPTH; q += 4) {
                int k = k0 + q;
                if constexpr (VEC) {
                    // K and every split's start are multiples of 4: four depths are in range together.
                    load4(&av[q], a + (long)m * K + k, k < ke);
                } else {
#pragma unroll
                    for (int u = 0; u < 4; u++) av[q + u] = k + u < ke ? a[(long)m * K + k + u] : 0.0f;
                }
            }
#pragma unroll
            for (int u = 0; u < ROWS_DEPTH; u++)
#pragma unroll
                for (int j = 0; j < V; j++) acc[m][j] = fmaf(av[u], bv[u][j], acc[m][j]);
        }
    }
#pragma unroll
    for (int m = 0; m < RM; m++) {
        if (m >= M) break;
#pragma unroll
        for (int j = 0; j < V; j++)
            if (n + j < N) put(c, partial, bias, accumulate, M, N, s, m, n + j, acc[m][j]);
    }
    const int S = (K + kc - 1) / kc;
    if (!partial || !last_split_warp(counters + w % slabs, S)) return;
    for (int m = 0; m < M; m++)
        for (int j = 0; j < V; j++)
            if (n + j < N) sum_splits(c, partial, bias, accumulate, M, N, S, m, n + j);
}

// Rows, b stored (N, K): a row of b is one column of c. Warp w owns the NC columns
// (w % groups) * NC.. and the depths of split s = w / groups; its lanes stride along K, V depths
// each (a warp reads 128 * V contiguous bytes of a row of b), and the lanes' partial sums are
// added by shuffles, in the same order on every lane.
#define ROWS_NT_COLUMNS 4
template <int RM, bool VEC>
__device__ __forceinline__ void sgemm_rows_nt(float* c, const float* a, const float* b, const float* bias,
                                              float* partial, unsigned* counters, int M, int N, int K, int kc,
                                              int accumulate) {
    constexpr int V = VEC ? 4 : 1, NC = ROWS_NT_COLUMNS;
    const int lane = threadIdx.x % WARP;
    const int w = blockIdx.x * ROWS_WARPS + threadIdx.x / WARP;
    const int groups = (N + NC - 1) / NC;
    const int s = w / groups, n0 = (w % groups) * NC;
    const int kb = s * kc, ke = min(K, kb + kc);
    if (kb >= K) return;
    float acc[RM][NC];
#pragma unroll
    for (int m = 0; m < RM; m++)
#pragma unroll
        for (int j = 0; j < NC; j++) acc[m][j] = 0.0f;
    for (int k = kb + lane * V; k < ke; k += WARP * V) {
        float bv[NC][V];
#pragma unroll
        for (int j = 0; j < NC; j++) {
            bool in = n0 + j < N;
            if constexpr (VEC) {
                load4(bv[j], b + (long)(n0 + j) * K + k, in);
            } else {
                bv[j][0] = in ? b[(long)(n0 + j) * K + k] : 0.0f;
            }
        }
#pragma unroll
        for (int m = 0; m < RM; m++) {
            if (m >= M) break;
            float av[V];
            if constexpr (VEC) {
                load4(av, a + (long)m * K + k, true);
            } else {
                av[0] = a[(long)m * K + k];
            }
#pragma unroll
            for (int j = 0; j < NC; j++)
#pragma unroll
                for (int u = 0; u < V; u++) acc[m][j] = fmaf(av[u], bv[j][u], acc[m][j]);
        }
    }
#pragma unroll
    for (int m = 0; m < RM; m++) {
        if (m >= M) break;
#pragma unroll
        for (int j = 0; j < NC; j++) {
            float v = warp_sum(acc[m][j]);
            int n = n0 + j;
            if (lane == (m * NC + j) % WARP && n < N) put(c, partial, bias, accumulate, M, N, s, m, n, v);
        }
    }
    const int S = (K + kc - 1) / kc;
    if (!partial || !last_split_warp(counters + w % groups, S)) return;
    for (int e = lane; e < M * NC; e += WARP) {
        int m = e / NC, n = n0 + e % NC;
        if (n < N) sum_splits(c, partial, bias, accumulate, M, N, S, m, n);
    }
}

// Grid (ceil(warps / ROWS_WARPS)) blocks of 32 * ROWS_WARPS threads, warps = slabs (or column
// groups) x splits; M <= RM; with splits, one counter per slab (or group).
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nn_r1(SGEMM_PARAMS) { sgemm_rows_nn<1, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nn_r1_v4(SGEMM_PARAMS) { sgemm_rows_nn<1, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nn_r2(SGEMM_PARAMS) { sgemm_rows_nn<2, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nn_r2_v4(SGEMM_PARAMS) { sgemm_rows_nn<2, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nn_r4(SGEMM_PARAMS) { sgemm_rows_nn<4, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nn_r4_v4(SGEMM_PARAMS) { sgemm_rows_nn<4, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nn_r8(SGEMM_PARAMS) { sgemm_rows_nn<8, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nn_r8_v4(SGEMM_PARAMS) { sgemm_rows_nn<8, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nn_r16(SGEMM_PARAMS) { sgemm_rows_nn<16, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nn_r16_v4(SGEMM_PARAMS) { sgemm_rows_nn<16, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nt_r1(SGEMM_PARAMS) { sgemm_rows_nt<1, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nt_r1_v4(SGEMM_PARAMS) { sgemm_rows_nt<1, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nt_r2(SGEMM_PARAMS) { sgemm_rows_nt<2, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nt_r2_v4(SGEMM_PARAMS) { sgemm_rows_nt<2, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nt_r4(SGEMM_PARAMS) { sgemm_rows_nt<4, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nt_r4_v4(SGEMM_PARAMS) { sgemm_rows_nt<4, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nt_r8(SGEMM_PARAMS) { sgemm_rows_nt<8, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nt_r8_v4(SGEMM_PARAMS) { sgemm_rows_nt<8, true>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nt_r16(SGEMM_PARAMS) { sgemm_rows_nt<16, false>(SGEMM_ARGS); }
extern "C" __global__ void __launch_bounds__(64) sgemm_rows_nt_r16_v4(SGEMM_PARAMS) { sgemm_rows_nt<16, true>(SGEMM_ARGS); }
