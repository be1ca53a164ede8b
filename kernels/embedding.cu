// Token, position (and BERT's token type) embeddings, mirroring src/cpu/ops/embedding.rs. The
// backward adds into the tables in a fixed order, never by float atomics.
#include "common.cuh"

// out (N, C) = wte[ids[n]] + wpe[pos[n]]
extern "C" __global__ void embedding_forward(float* out, const unsigned* ids, const int* pos,
                                             const float* wte, const float* wpe, int N, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)N * C) return;
    int n = i / C, c = i % C;
    float v = wte[(long)ids[n] * C + c];
    if (wpe) v += wpe[(long)pos[n] * C + c];
    out[i] = v;
}

// out (N, C) = wte[ids[n]] + wpe[pos[n]] + wtt[types[n]]   (BERT: word + position + token type)
extern "C" __global__ void bert_embedding_forward(float* out, const unsigned* ids, const int* pos,
                                                  const unsigned* types, const float* wte,
                                                  const float* wpe, const float* wtt, int N, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)N * C) return;
    int n = i / C, c = i % C;
    out[i] = wte[(long)ids[n] * C + c] + wpe[(long)pos[n] * C + c] + wtt[(long)types[n] * C + c];
}

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
