// The fused PGSRM reward, mirroring src/cpu/bert.rs's pooling and src/reward/shaping.rs: masked
// mean pool of the encoder's last hidden states, L2 normalise, cosine against the parent's vector,
// shaping. One block per answer, one launch per batch.
#include "common.cuh"

#define SHAPE_PGSRM 0
#define SHAPE_TRUNCATE 1
#define SHAPE_EUCLIDEAN 2
#define SHAPE_BINARY 3

// reward (B), emb (B, D) from hidden (B, T, D), mask (B, T), parent (B, D); exact (B) is the
// text-level exact-match flag used by the binary shaping. A zero vector has cosine 0.
extern "C" __global__ void pool_cosine_shape_forward(float* reward, float* emb, const float* hidden,
                                                     const int* mask, const float* parent,
                                                     const int* exact, int B, int T, int D,
                                                     int shaping, float power) {
    int b = blockIdx.x;
    if (b >= B) return;
    float n_tok = 0.0f;
    for (int t = threadIdx.x; t < T; t += blockDim.x) n_tok += mask[(long)b * T + t] ? 1.0f : 0.0f;
    n_tok = block_sum(n_tok);
    float sq = 0.0f, psq = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float s = 0.0f;
        for (int t = 0; t < T; t++)
            if (mask[(long)b * T + t]) s += hidden[((long)b * T + t) * D + d];
        s = n_tok > 0.0f ? s / n_tok : 0.0f;
        emb[(long)b * D + d] = s;
        sq += s * s;
        float p = parent[(long)b * D + d];
        psq += p * p;
    }
    sq = block_sum(sq);
    psq = block_sum(psq);
    // Sentence-transformers' Normalize divides by max(norm, 1e-12).
    float inv = 1.0f / fmaxf(sqrtf(sq), 1e-12f);
    float pinv = 1.0f / fmaxf(sqrtf(psq), 1e-12f);
    float dot = 0.0f, dist = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float e = emb[(long)b * D + d] * inv;
        float p = parent[(long)b * D + d] * pinv;
        emb[(long)b * D + d] = e;
        dot += e * p;
        dist += (e - p) * (e - p);
    }
    dot = block_sum(dot);
    dist = block_sum(dist);
    if (threadIdx.x != 0) return;
    float r;
    if (shaping == SHAPE_PGSRM) r = fminf(fmaxf(powf((dot + 1.0f) * 0.5f, power), 0.0f), 1.0f);
    else if (shaping == SHAPE_TRUNCATE) r = powf(fmaxf(dot, 0.0f), power);
    else if (shaping == SHAPE_EUCLIDEAN) r = fminf(fmaxf(1.0f - sqrtf(dist), -1.0f), 1.0f);
    else r = exact && exact[b] ? 1.0f : 0.0f;
    reward[b] = r;
}
