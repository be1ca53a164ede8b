// Backward of the GPT-2 layers other than the dense products and attention: one kernel (or one
// per-row and one per-column kernel) per CPU function of
// src/cpu/ops/{embedding,layernorm,gelu,residual}.rs, each adding into its gradients as the CPU
// functions do. Parameter gradients are column sums over rows, reduced in a fixed order, never by
// float atomics: the same inputs give the same bits on every run.
#include "common.cuh"

// dtable (V, C) += dout (N, C) scattered by key: for every distinct key u, rows[starts[u] ..
// starts[u+1]) (ascending) are the rows whose key is keys[u]. One thread per (key, column) adds
// its rows in order, so no two threads touch one element. Embedding backward with the token ids
// (wte) or the position ids (wpe) as keys; the logits' scatter dinp[rows] += d with the row
// indices as keys.
extern "C" __global__ void embedding_backward(float* dtable, const float* dout, const int* keys,
                                              const int* starts, const int* rows, int n_keys,
                                              int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)n_keys * C) return;
    int u = i / C, c = i % C;
    float* d = dtable + (long)keys[u] * C + c;
    float acc = *d;
    for (int j = starts[u]; j < starts[u + 1]; j++) acc += dout[(long)rows[j] * C + c];
    *d = acc;
}

// dinp (N, C) += (dnorm - mean(dnorm) - norm mean(dnorm norm)) rstd with dnorm = w dout and
// norm = (inp - mean) rstd; one block per row
extern "C" __global__ void layernorm_backward_dinp(float* dinp, const float* dout, const float* inp,
                                                   const float* w, const float* mean,
                                                   const float* rstd, int N, int C) {
    int n = blockIdx.x;
    if (n >= N) return;
    const float* x = inp + (long)n * C;
    const float* d = dout + (long)n * C;
    float m = mean[n], s = rstd[n];
    float dn = 0.0f, dnn = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float dnorm = w[c] * d[c];
        dn += dnorm;
        dnn += dnorm * (x[c] - m) * s;
    }
    float dnorm_mean = block_sum(dn) / C;
    float dnorm_norm_mean = block_sum(dnn) / C;
    float* di = dinp + (long)n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float norm = (x[c] - m) * s;
        di[c] += (w[c] * d[c] - dnorm_mean - norm * dnorm_norm_mean) * s;
    }
}

// dw (C) += sum_rows norm dout; db (C) += sum_rows dout; blocks of (32, COLUMN_ROWS) threads
extern "C" __global__ void __launch_bounds__(512) layernorm_backward_params(
    float* dw, float* db, const float* dout, const float* inp, const float* mean,
    const float* rstd, int N, int C) {
    column_sums<2>(
        N, C,
        [&](int r, int c, float* s) {
            float d = dout[(long)r * C + c];
            s[0] += (inp[(long)r * C + c] - mean[r]) * rstd[r] * d;
            s[1] += d;
        },
        [&](int c, const float* s) {
            dw[c] += s[0];
            db[c] += s[1];
        });
}

#define GELU_SCALE 0.7978845608f

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

// da (n) += dout; db (n) += dout
extern "C" __global__ void residual_backward(float* da, float* db, const float* dout, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    da[i] += dout[i];
    db[i] += dout[i];
}
