// The fused PGSRM reward, mirroring src/cpu/bert.rs's pooling and src/reward/shaping.rs: masked
// mean pool of the encoder's last hidden states, L2 normalise, cosine against the parent's vector,
// shaping. One block per answer, one launch per batch.
#include "common.cuh"

#define SHAPE_PGSRM 0
#define SHAPE_TRUNCATE 1
#define SHAPE_EUCLIDEAN 2
#define SHAPE_BINARY 3

// reward (B), emb (B, D) from hidden (N, D), where answer b is rows [starts[b], starts[b+1]) (packed
// as the CPU encoder packs them, or padded: starts[b] = b T) and only rows with mask[r] pool;
// parent (B, D); exact (B) is the text-level exact-match flag of the binary shaping. A zero vector
// has cosine 0.
extern "C" __global__ void pool_cosine_shape_forward(float* reward, float* emb, const float* hidden,
                                                     const int* mask, const int* starts,
                                                     const float* parent, const int* exact, int B,
                                                     int D, int shaping, float power) {
    int b = blockIdx.x;
    if (b >= B) return;
    int r0 = starts[b], r1 = starts[b + 1];
    float n_tok = 0.0f;
    for (int r = r0 + threadIdx.x; r < r1; r += blockDim.x) n_tok += mask[r] ? 1.0f : 0.0f;
    n_tok = block_sum(n_tok);
    float sq = 0.0f, psq = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float s = 0.0f;
        for (int r = r0; r < r1; r++)
            if (mask[r]) s += hidden[(long)r * D + d];
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
