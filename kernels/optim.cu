// The optimiser's pieces, mirroring src/ppo/adamw.rs: the global gradient norm (two passes: sums
// of squares of fixed pieces in f64, then their sum in a fixed order), clipping (a scale of every
// gradient by the clip coefficient), and PyTorch's AdamW step. The norm and the coefficient stay
// on the device, so clipping and the step read them without a round trip to the host; the step
// can also apply the coefficient itself instead of a clipping pass. The norm's first pass and the
// step each take every tensor of a model in one launch, through a list of the tensors' addresses
// (`ptrs`, a row of addresses per tensor), lengths and first blocks: block b works on the tensor
// whose blocks start at or before b.
#include "common.cuh"

// Elements per piece of the norm's first pass, as the CPU reference sums them.
#define NORM_PIECE 32768

// The tensor of block b: the last t with first[t] <= b, of first (T + 1, ascending).
__device__ __forceinline__ int tensor_of(const int* first, int T, int b) {
    int lo = 0, hi = T;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (first[mid] <= b) lo = mid; else hi = mid;
    }
    return lo;
}

// partial (the pieces of every tensor, tensor after tensor) = the sum of squares of each piece of
// NORM_PIECE elements of the tensors ptrs[t] (lens[t]), in f64; one block per piece
extern "C" __global__ void grad_norm_squares(double* partial, const unsigned long long* ptrs,
                                             const long long* lens, const int* first, int T) {
    int t = tensor_of(first, T, blockIdx.x);
    const float* g = (const float*)ptrs[t];
    long n = lens[t];
    long p0 = (long)(blockIdx.x - first[t]) * NORM_PIECE;
    long p1 = p0 + NORM_PIECE < n ? p0 + NORM_PIECE : n;
    double s = 0.0;
    for (long i = p0 + threadIdx.x; i < p1; i += blockDim.x) s += (double)g[i] * (double)g[i];
    s = block_sum_f64(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Every tensor ptrs[t] (lens[t]) = 0, one element a thread: the gradients a step adds into
extern "C" __global__ void grad_zero(const unsigned long long* ptrs, const long long* lens,
                                     const int* first, int T) {
    int t = tensor_of(first, T, blockIdx.x);
    long i = (long)(blockIdx.x - first[t]) * blockDim.x + threadIdx.x;
    if (i < lens[t]) ((float*)ptrs[t])[i] = 0.0f;
}

// norm_coef (2) = the norm sqrt(sum partial) and the clip coefficient max_norm / (norm + 1e-6)
// when that is below 1, else 1 (also for a norm that is not finite: the host reports it and
// nothing is scaled). One block.
extern "C" __global__ void grad_norm_finish(float* norm_coef, const double* partial, int n_partial,
                                            float max_norm) {
    double s = 0.0;
    for (int i = threadIdx.x; i < n_partial; i += blockDim.x) s += partial[i];
    s = block_sum_f64(s);
    if (threadIdx.x != 0) return;
    float norm = (float)sqrt(s);
    float coef = max_norm / (norm + 1e-6f);
    bool finite = fabsf(norm) < INFINITY;
    norm_coef[0] = norm;
    norm_coef[1] = finite && coef < 1.0f ? coef : 1.0f;
}

// g (n) *= norm_coef[1] when it is below 1 (clip_grad_norm's scaling)
extern "C" __global__ void grad_clip(float* g, long n, const float* norm_coef) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float coef = norm_coef[1];
    if (coef < 1.0f) g[i] *= coef;
}

// One AdamW step over every tensor t, with ptrs[4 t ..] = its p, m, v, g (lens[t]), one element a
// thread: p *= decay (= 1 - lr wd); m, v move towards g, g^2; then
// p -= step_size m / (sqrt(v) / bc2_sqrt + eps), with step_size = lr / (1 - beta1^t) and
// bc2_sqrt = sqrt(1 - beta2^t) computed by the host. With norm_coef, the gradient is first scaled
// by norm_coef[1] (the clip coefficient) instead of a clipping pass.
extern "C" __global__ void adamw_step(const unsigned long long* ptrs, const long long* lens,
                                      const int* first, int T, float beta1, float beta2, float eps,
                                      float decay, float step_size, float bc2_sqrt,
                                      const float* norm_coef) {
    int t = tensor_of(first, T, blockIdx.x);
    long i = (long)(blockIdx.x - first[t]) * blockDim.x + threadIdx.x;
    if (i >= lens[t]) return;
    float* p = (float*)ptrs[4 * t];
    float* m = (float*)ptrs[4 * t + 1];
    float* v = (float*)ptrs[4 * t + 2];
    const float* g = (const float*)ptrs[4 * t + 3];
    float gi = norm_coef ? g[i] * norm_coef[1] : g[i];
    float pi = p[i] * decay;
    float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
}
