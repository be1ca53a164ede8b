// Next-token sampling for a batch of rows, mirroring src/sample.rs: temperature, top-k, top-p, and
// greedy when the temperature is 0. One block per row. The uniform draw of row b at decoding step
// `step` comes from `u[b]` when given (so a check can feed the CPU the same numbers), else from a
// counter-based hash of (seed, b, step): a run is reproducible without any RNG state on the device.
#include "common.cuh"

__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 bits, a function of (seed, row, step) only.
__device__ __forceinline__ float counter_uniform(unsigned long long seed, unsigned row, unsigned step) {
    unsigned long long h = mix64(seed ^ mix64(((unsigned long long)row << 32) | step));
    return (h >> 40) * (1.0f / 16777216.0f);
}

// Count of z >= t over the row, and their mass sum e^(z - m). z = logits * inv_temp.
__device__ void kept_stats(const float* x, int V, float inv_temp, float m, float t, float* count,
                           float* mass) {
    float c = 0.0f, s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float z = x[i] * inv_temp;
        if (z >= t) {
            c += 1.0f;
            s += expf(z - m);
        }
    }
    *count = block_sum(c);
    *mass = block_sum(s);
}

// tokens (B), logprobs (B) from logits (B, V). The log-prob is that of softmax(logits / temperature)
// before top-k/top-p filtering (softmax(logits) when greedy), as the CPU sampler reports it.
// Top-k and top-p keep every token at or above a threshold found by bisection on the value, so
// tokens tied at the threshold are all kept. Launch with 1024 threads.
extern "C" __global__ void __launch_bounds__(1024) sample_forward(
    unsigned* tokens, float* logprobs, const float* logits, const float* u, int B, int V,
    float temperature, int top_k, float top_p, unsigned long long seed, unsigned step) {
    __shared__ double chunk_mass[1024];
    __shared__ int chosen;
    int b = blockIdx.x;
    if (b >= B) return;
    const float* x = logits + (long)b * V;
    float inv_temp = temperature > 0.0f ? 1.0f / temperature : 1.0f;

    float m = -INFINITY, lo = INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        m = fmaxf(m, x[i] * inv_temp);
        lo = fminf(lo, x[i] * inv_temp);
    }
    m = block_max(m);
    lo = -block_max(-lo);
    float z_all = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) z_all += expf(x[i] * inv_temp - m);
    z_all = block_sum(z_all);

    if (temperature <= 0.0f) {
        // Greedy: the lowest index among the maxima.
        int best = V;
        for (int i = threadIdx.x; i < V; i += blockDim.x)
            if (x[i] == m && i < best) best = i;
        if (threadIdx.x == 0) chosen = V;
        __syncthreads();
        atomicMin(&chosen, best);
        __syncthreads();
        if (threadIdx.x == 0) {
            tokens[b] = chosen;
            logprobs[b] = x[chosen] - m - logf(z_all);
        }
        return;
    }

    float t = lo, count, mass;
    if (top_k > 0 && top_k < V) {
        float a = lo, c = m;  // invariant: count(z >= a) >= top_k
        for (int it = 0; it < 48; it++) {
            float mid = 0.5f * (a + c);
            if (mid <= a || mid >= c) break;
            kept_stats(x, V, inv_temp, m, mid, &count, &mass);
            if (count >= top_k) a = mid; else c = mid;
        }
        t = a;
    }
    kept_stats(x, V, inv_temp, m, t, &count, &mass);
    if (top_p < 1.0f) {
        float goal = top_p * mass, a = t, c = m;  // invariant: mass(z >= a) >= goal
        for (int it = 0; it < 48; it++) {
            float mid = 0.5f * (a + c);
            if (mid <= a || mid >= c) break;
            float cnt, ms;
            kept_stats(x, V, inv_temp, m, mid, &cnt, &ms);
            if (ms >= goal) a = mid; else c = mid;
        }
        t = a;
        kept_stats(x, V, inv_temp, m, t, &count, &mass);
    }

    // Inverse CDF over the kept tokens in index order, summed in double as the CPU sampler sums:
    // in float, the rounding of 50,000 terms is larger than one token's share of a near-uniform
    // vocabulary, and the same draw would pick another token than the CPU's. Each thread owns a
    // contiguous chunk.
    double scale = 1.0 / (double)temperature;
    double draw = (double)(u ? u[b] : counter_uniform(seed, b, step));
    int chunk = (V + blockDim.x - 1) / blockDim.x;
    int begin = threadIdx.x * chunk, end = min(V, begin + chunk);
    double s = 0.0;
    for (int i = begin; i < end; i++)
        if (x[i] * inv_temp >= t) s += exp((double)x[i] * scale - (double)m);
    chunk_mass[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < blockDim.x; w++) total += chunk_mass[w];
        draw *= total;
        // The chunk the draw falls in; rounding that leaves the draw past the total takes the last one.
        double acc = 0.0, before = 0.0;
        int owner = 0;
        for (int w = 0; w < blockDim.x; w++) {
            if (chunk_mass[w] <= 0.0) continue;
            owner = w;
            before = acc;
            acc += chunk_mass[w];
            if (acc > draw) break;
        }
        acc = before;
        // Walk the owner's chunk in the same order its mass was summed.
        int pick = -1;
        int wb = owner * chunk, we = min(V, wb + chunk);
        for (int i = wb; i < we; i++) {
            if (x[i] * inv_temp < t) continue;
            pick = i;
            acc += exp((double)x[i] * scale - (double)m);
            if (acc > draw) break;
        }
        tokens[b] = pick;
        logprobs[b] = x[pick] * inv_temp - m - logf(z_all);
    }
}

// The bookkeeping of a decoding loop on the device, mirroring `sample::sample_step` around the
// sampling itself, so that a loop of steps needs nothing from the host until it ends.

// u (B): step `step`'s uniform draw of every row. Sequential order (`keyed` = 0): the rows not yet
// done take the next draws of `draws` in row order, as `sample_step` takes them from its
// generator, and `cursor` counts the draws taken; done rows get 0. Keyed order: row b takes
// draws[step * B + b]. One thread: the order is sequential by definition, and B is small.
extern "C" __global__ void __launch_bounds__(32) draw_uniforms(
    float* u, const float* draws, const int* done, int* cursor, int step, int keyed, int B) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    if (keyed) {
        for (int b = 0; b < B; b++) u[b] = draws[(long)step * B + b];
        return;
    }
    int c = *cursor;
    for (int b = 0; b < B; b++) u[b] = done[b] ? 0.0f : draws[c++];
    *cursor = c;
}

// After step `step` sampled tokens (B) and logprobs (B): both go to row `step` of out_tokens and
// out_logprobs (S, B); each row's next input `ids` is its token, or `eos` once it is done (it was
// done before, or it just sampled `eos`), at position `pos` + 1.
extern "C" __global__ void __launch_bounds__(256) feed_sampled(
    unsigned* out_tokens, float* out_logprobs, unsigned* ids, int* pos, int* done,
    const unsigned* tokens, const float* logprobs, int step, unsigned eos, int B) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    out_tokens[(long)step * B + b] = tokens[b];
    out_logprobs[(long)step * B + b] = logprobs[b];
    int was = done[b];
    ids[b] = was ? eos : tokens[b];
    done[b] = was || tokens[b] == eos;
    pos[b] += 1;
}
