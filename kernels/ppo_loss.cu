// The losses of the policy update and their gradients, mirroring src/ppo/loss.rs (`actor_loss`,
// `critic_loss`) and the value head of src/cpu/policy.rs (`Critic::value` and its gradient).
// The actor loss is fused: one block per scored token reads its logits row once for the maximum
// and the softmax sums (an online softmax), then once more to write dloss/dlogits; no probability
// matrix is stored. The means over the tokens are a second, one-block kernel that adds the rows'
// terms in a fixed order.
#include "common.cuh"

// The per-token terms actor_loss writes for actor_loss_means, in this order.
#define TERM_POLICY 0
#define TERM_ENTROPY 1
#define TERM_KL 2
#define TERM_APPROX_KL 3
#define TERM_CLIPPED 4
#define N_TERMS 5

// Row i of M scored tokens: logprobs[i] = log softmax(logits[i])[tokens[i]]; terms (M, N_TERMS)
// = the token's policy loss, entropy, KL to the reference, approximate KL and clipped flag;
// dlogits (M, V) = d(policy - entropy_coef H + kl_coef KL)/dlogits of the means over the M tokens.
// The policy loss is -logp A (the paper's update) when clip_range < 0, else PPO's clipped
// surrogate -min(ratio A, clamp(ratio, 1 - clip_range, 1 + clip_range) A) with
// ratio = exp(logp - old logp). One block per row.
extern "C" __global__ void actor_loss(float* dlogits, float* logprobs, float* terms,
                                      const float* logits, const unsigned* tokens,
                                      const float* old_logprobs, const float* ref_logprobs,
                                      const float* advantages, int M, int V, float clip_range,
                                      float entropy_coef, float kl_coef) {
    int i = blockIdx.x;
    if (i >= M) return;
    const float* z = logits + (long)i * V;
    // Online softmax over this thread's share: m its maximum, s = sum e^(z - m),
    // w = sum e^(z - m) (z - m). A new maximum rescales both.
    float m = -INFINITY, s = 0.0f, w = 0.0f;
    for (int k = threadIdx.x; k < V; k += blockDim.x) {
        float x = z[k];
        if (x > m) {
            if (s > 0.0f) {
                float c = expf(m - x);
                w = c * (w + (m - x) * s);
                s *= c;
            }
            m = x;
        }
        float e = expf(x - m);
        s += e;
        w += e * (x - m);
    }
    float mx = block_max(m);
    // Shift every share to the row maximum; a thread that saw no element adds nothing.
    float c = s > 0.0f ? expf(m - mx) : 0.0f;
    float sum = block_sum(c * s);
    float wsum = block_sum(s > 0.0f ? c * (w + (m - mx) * s) : 0.0f);
    float ez = wsum / sum;  // E_p[z] - mx
    float h = logf(sum) - ez;
    unsigned a = tokens[i];
    float logp = z[a] - mx - logf(sum);
    float adv = advantages[i];
    float log_ratio = logp - old_logprobs[i];
    float ratio = expf(log_ratio);
    // The policy term and its derivative with respect to logp, before the 1/M of the mean.
    float pol, dpol, clipped = 0.0f;
    if (clip_range < 0.0f) {
        pol = -logp * adv;
        dpol = -adv;
    } else {
        float unclipped = ratio * adv;
        float clamped = fminf(fmaxf(ratio, 1.0f - clip_range), 1.0f + clip_range) * adv;
        if (fabsf(ratio - 1.0f) > clip_range) clipped = 1.0f;
        if (unclipped <= clamped) {
            pol = -unclipped;
            dpol = -ratio * adv;
        } else {
            // The clamped branch is constant in logp once the ratio is outside the range.
            pol = -clamped;
            bool inside = ratio > 1.0f - clip_range && ratio < 1.0f + clip_range;
            dpol = inside ? -ratio * adv : 0.0f;
        }
    }
    float inv_m = 1.0f / M;
    float g = (dpol + kl_coef) * inv_m;
    float ge = entropy_coef * inv_m;
    float* d = dlogits + (long)i * V;
    float inv_sum = 1.0f / sum;
    for (int k = threadIdx.x; k < V; k += blockDim.x) {
        float x = z[k] - mx;
        float p = expf(x) * inv_sum;
        // -entropy_coef dH/dz_k = entropy_coef p_k (z_k - E[z])
        float dk = -g * p + ge * p * (x - ez);
        if (k == a) dk += g;
        d[k] = dk;
    }
    if (threadIdx.x == 0) {
        logprobs[i] = logp;
        float* t = terms + (long)i * N_TERMS;
        t[TERM_POLICY] = pol;
        t[TERM_ENTROPY] = h;
        t[TERM_KL] = logp - ref_logprobs[i];
        t[TERM_APPROX_KL] = (ratio - 1.0f) - log_ratio;
        t[TERM_CLIPPED] = clipped;
    }
}

// out (6) = policy, entropy, KL, actor = policy - entropy_coef entropy + kl_coef KL, approximate
// KL and clip fraction: the means of the M rows of terms (M, N_TERMS), added in f64 in a fixed
// order. One block.
extern "C" __global__ void actor_loss_means(float* out, const float* terms, int M,
                                            float entropy_coef, float kl_coef) {
    double mean[N_TERMS];
    for (int j = 0; j < N_TERMS; j++) {
        double s = 0.0;
        for (int i = threadIdx.x; i < M; i += blockDim.x) s += terms[(long)i * N_TERMS + j];
        mean[j] = M > 0 ? block_sum_f64(s) / M : 0.0;
    }
    if (threadIdx.x != 0) return;
    out[0] = (float)mean[TERM_POLICY];
    out[1] = (float)mean[TERM_ENTROPY];
    out[2] = (float)mean[TERM_KL];
    out[3] = (float)(mean[TERM_POLICY] - (double)entropy_coef * mean[TERM_ENTROPY] +
                     (double)kl_coef * mean[TERM_KL]);
    out[4] = (float)mean[TERM_APPROX_KL];
    out[5] = (float)mean[TERM_CLIPPED];
}

// out (2) = the mean squared error of values against returns (B) and the critic loss, half of it;
// dvalues (B) = d(critic loss)/dvalues. With value_clip >= 0, each value's error is the larger of
// those of V and of old V + clamp(V - old V, +-value_clip), as PPO clips values. One block.
extern "C" __global__ void critic_loss(float* out, float* dvalues, const float* values,
                                       const float* old_values, const float* returns, int B,
                                       float value_clip) {
    double sq = 0.0;
    for (int i = threadIdx.x; i < B; i += blockDim.x) {
        float v = values[i], r = returns[i];
        float e = v - r, se = e * e, de = e;
        if (value_clip >= 0.0f) {
            float old = old_values[i];
            float ec = old + fminf(fmaxf(v - old, -value_clip), value_clip) - r;
            if (ec * ec > e * e) {
                se = ec * ec;
                de = fabsf(v - old) < value_clip ? ec : 0.0f;
            }
        }
        sq += se;
        dvalues[i] = de / B;
    }
    double mse = B > 0 ? block_sum_f64(sq) / B : 0.0;
    if (threadIdx.x == 0) {
        out[0] = (float)mse;
        out[1] = (float)(0.5 * mse);
    }
}

// values (B) = w . hidden[rows[b]] + bias, hidden (N, C), w (C), bias (1); summed in f64 as the
// CPU's value head does. One warp per value.
extern "C" __global__ void value_forward(float* values, const float* hidden, const int* rows,
                                         const float* w, const float* bias, int B, int C) {
    long gw = (long)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (gw >= B) return;
    int lane = threadIdx.x % WARP;
    const float* x = hidden + (long)rows[gw] * C;
    double s = 0.0;
    for (int c = lane; c < C; c += WARP) s += (double)w[c] * (double)x[c];
    for (int o = WARP / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) values[gw] = (float)((double)bias[0] + s);
}

// dw (C) += sum_b dvalues[b] hidden[rows[b]]; dbias (1) += sum_b dvalues[b]: one thread per
// column (and one for the bias) adds the B values in order
extern "C" __global__ void value_backward(float* dw, float* dbias, const float* dvalues,
                                          const float* hidden, const int* rows, int B, int C) {
    long c = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c > C) return;
    if (c == C) {
        float acc = dbias[0];
        for (int b = 0; b < B; b++) acc += dvalues[b];
        dbias[0] = acc;
        return;
    }
    float acc = dw[c];
    for (int b = 0; b < B; b++) acc += dvalues[b] * hidden[(long)rows[b] * C + c];
    dw[c] = acc;
}
